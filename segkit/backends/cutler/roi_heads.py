"""Box heads (standard or 3-stage cascade), detection selection and the mask head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms

from . import boxes as box_ops
from .boxes import MultiLevelRoIAlign
from .config import CfgNode, is_cascade
from .layers import ConvNorm


def _conv_stack(owner: nn.Module, prefix: str, channels: int, num_conv: int, conv_dim: int, norm: str):
    """3x3 conv + norm + ReLU layers registered on ``owner`` as ``<prefix>1..n`` (detectron2's key names).

    Returns the layers and the channel count after them.
    """
    convs = []
    for k in range(num_conv):
        conv = ConvNorm(channels, conv_dim, 3, padding=1, norm=norm, relu=True)
        owner.add_module(f"{prefix}{k + 1}", conv)
        convs.append(conv)
        channels = conv_dim
    return convs, channels


class BoxHead(nn.Module):
    """FastRCNNConvFCHead: optional 3x3 convs, then flatten and fully connected layers, all + ReLU."""

    def __init__(self, channels: int, resolution: int, num_conv: int, conv_dim: int, norm: str,
                 num_fc: int, fc_dim: int):
        super().__init__()
        self.convs, channels = _conv_stack(self, "conv", channels, num_conv, conv_dim, norm)
        size = channels * resolution * resolution
        self.fcs = []
        for k in range(num_fc):
            fc = nn.Linear(size, fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.fcs.append(fc)
            size = fc_dim
        self.out_size = size

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        x = x.flatten(1)
        for fc in self.fcs:
            x = F.relu_(fc(x))
        return x


class BoxPredictor(nn.Module):
    """Class logits (K + 1, background last) and box regressions (4, or 4 per class)."""

    def __init__(self, in_size: int, num_classes: int, class_agnostic: bool):
        super().__init__()
        self.cls_score = nn.Linear(in_size, num_classes + 1)
        self.bbox_pred = nn.Linear(in_size, 4 if class_agnostic else 4 * num_classes)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """MaskRCNNConvUpsampleHead: 3x3 convs + ReLU, 2x2/2 transposed conv + ReLU, 1x1 predictor."""

    def __init__(self, channels: int, num_conv: int, conv_dim: int, norm: str, num_classes: int):
        super().__init__()
        self.convs, channels = _conv_stack(self, "mask_fcn", channels, num_conv, conv_dim, norm)
        self.deconv = nn.ConvTranspose2d(channels, conv_dim, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, kernel_size=1)

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.predictor(F.relu_(self.deconv(x)))


def select_detections(boxes, scores, image_size, score_thresh, nms_thresh, topk):
    """Per-class thresholding (strictly above), clipping, NMS per class and the top-k cap.

    ``boxes`` is (R, 4) or (R, K*4), ``scores`` (R, K + 1) with background last. Returns boxes
    (D, 4), scores (D,), classes (D,) sorted by score.
    """
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    boxes, scores = boxes[valid], scores[valid][:, :-1]
    boxes = box_ops.clip(boxes.view(len(boxes), -1, 4), image_size)
    mask = scores > score_thresh
    index = mask.nonzero()
    boxes = boxes[index[:, 0], 0] if boxes.shape[1] == 1 else boxes[mask]
    scores = scores[mask]
    keep = batched_nms(boxes, scores, index[:, 1], nms_thresh)
    if topk >= 0:
        keep = keep[:topk]
    return boxes[keep], scores[keep], index[keep, 1]


class ROIHeads(nn.Module):
    """Box stage(s) over the proposals, then the mask head over the kept detections.

    Mask R-CNN has one box stage; a cascade has one per BBOX_REG_WEIGHTS entry, each refining the
    previous stage's boxes, with scores averaged over the stages. Module names follow detectron2:
    ``box_head`` / ``box_predictor`` are lists for cascades, single modules otherwise.
    """

    def __init__(self, cfg: CfgNode, in_channels: int, strides: dict):
        super().__init__()
        heads, box, mask = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
        self.in_features = list(heads.IN_FEATURES)
        level_strides = [strides[name] for name in self.in_features]
        self.nms_thresh = heads.NMS_THRESH_TEST
        self.sigmoid_scores = box.USE_SIGMOID_CE
        self.box_pooler = MultiLevelRoIAlign(box.POOLER_RESOLUTION, level_strides, box.POOLER_SAMPLING_RATIO,
                                             aligned=box.POOLER_TYPE == "ROIAlignV2")
        self.mask_pooler = MultiLevelRoIAlign(mask.POOLER_RESOLUTION, level_strides, mask.POOLER_SAMPLING_RATIO,
                                              aligned=mask.POOLER_TYPE == "ROIAlignV2")

        def box_stage():
            head = BoxHead(in_channels, box.POOLER_RESOLUTION, box.NUM_CONV, box.CONV_DIM, box.NORM,
                           box.NUM_FC, box.FC_DIM)
            return head, BoxPredictor(head.out_size, heads.NUM_CLASSES, box.CLS_AGNOSTIC_BBOX_REG)

        self.cascade = is_cascade(cfg)
        if self.cascade:
            self.stage_weights = [tuple(w) for w in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS]
            stages = [box_stage() for _ in self.stage_weights]
            self.box_head = nn.ModuleList(h for h, _ in stages)
            self.box_predictor = nn.ModuleList(p for _, p in stages)
        else:
            self.stage_weights = [tuple(box.BBOX_REG_WEIGHTS)]
            self.box_head, self.box_predictor = box_stage()
        self.mask_head = MaskHead(in_channels, mask.NUM_CONV, mask.CONV_DIM, mask.NORM,
                                  1 if mask.CLS_AGNOSTIC_MASK else heads.NUM_CLASSES)

    def stages(self) -> list:
        """(box head, predictor, regression weights) of each stage, in order."""
        if self.cascade:
            return list(zip(self.box_head, self.box_predictor, self.stage_weights))
        return [(self.box_head, self.box_predictor, self.stage_weights[0])]

    def pooling_levels(self, features: dict) -> list:
        """The pyramid levels the poolers read, as contiguous float32 maps (made once per image)."""
        return [features[name].float().contiguous() for name in self.in_features]

    def detect(self, levels: list, proposals, image_size, score_thresh, topk):
        """Boxes (D, 4), scores (D,), classes (D,) in resized-image pixels, best first."""
        dtype = next(self.parameters()).dtype
        probs_sum = None
        stages = self.stages()
        for k, (head, predictor, weights) in enumerate(stages):
            if k > 0:
                proposals = box_ops.clip(pred_boxes, image_size)
            logits, deltas = predictor(head(self.box_pooler(levels, proposals).to(dtype)))
            logits = logits.float()
            pred_boxes = box_ops.apply_deltas(deltas, proposals, weights)
            probs = logits.sigmoid() if self.sigmoid_scores else F.softmax(logits, dim=-1)
            probs_sum = probs if probs_sum is None else probs_sum + probs
        scores = probs_sum * (1.0 / len(stages))
        return select_detections(pred_boxes, scores, image_size, score_thresh, self.nms_thresh, topk)

    def masks(self, levels: list, boxes, classes):
        """(D, 28, 28) float32 mask probabilities of each detection's class."""
        dtype = next(self.parameters()).dtype
        logits = self.mask_head(self.mask_pooler(levels, boxes).to(dtype)).float()
        if logits.shape[1] > 1:
            logits = logits[torch.arange(len(logits), device=logits.device), classes][:, None]
        return logits[:, 0].sigmoid()

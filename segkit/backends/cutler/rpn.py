"""Region proposal network: a shared conv head over the pyramid, anchors, per-level top-k and NMS."""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import batched_nms

from . import boxes as box_ops
from .config import CfgNode, anchor_params
from .layers import ConvNorm


def cell_anchors(sizes, aspect_ratios) -> torch.Tensor:
    """(len(sizes) * len(ratios), 4) xyxy anchors centred on 0, sizes outer, ratios inner."""
    anchors = []
    for size in sizes:
        area = size ** 2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32, device="cpu")


def grid_anchors(cell: torch.Tensor, height: int, width: int, stride: int, offset: float) -> torch.Tensor:
    """All anchors of a (height, width) map, ordered (y, x, anchor)."""
    shifts_x = torch.arange(offset * stride, width * stride, step=stride, dtype=torch.float32, device=cell.device)
    shifts_y = torch.arange(offset * stride, height * stride, step=stride, dtype=torch.float32,
                            device=cell.device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then 1x1 convs for objectness logits and anchor deltas."""

    def __init__(self, in_channels: int, num_anchors: int, conv_dims: list[int]):
        super().__init__()
        channels = in_channels
        if len(conv_dims) == 1:
            out = channels if conv_dims[0] == -1 else conv_dims[0]
            self.conv = ConvNorm(channels, out, 3, padding=1, relu=True)
            channels = out
        else:
            self.conv = nn.Sequential()
            for k, dim in enumerate(conv_dims):
                out = channels if dim == -1 else dim
                self.conv.add_module(f"conv{k}", ConvNorm(channels, out, 3, padding=1, relu=True))
                channels = out
        self.objectness_logits = nn.Conv2d(channels, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * 4, kernel_size=1)

    def forward(self, x):
        hidden = self.conv(x)
        return self.objectness_logits(hidden), self.anchor_deltas(hidden)


class RPN(nn.Module):
    """Proposals for one image: top-k anchors per level, decoded, clipped, NMS within each level."""

    def __init__(self, cfg: CfgNode, in_channels: int, strides: list[int]):
        super().__init__()
        rpn = cfg.MODEL.RPN
        sizes, ratios = anchor_params(cfg)
        self.in_features = list(rpn.IN_FEATURES)
        self.strides = strides
        self.cell_anchors = [cell_anchors(s, r) for s, r in zip(sizes, ratios)]
        self.offset = cfg.MODEL.ANCHOR_GENERATOR.OFFSET
        self.rpn_head = RPNHead(in_channels, len(self.cell_anchors[0]), rpn.CONV_DIMS)
        self.weights = tuple(rpn.BBOX_REG_WEIGHTS)
        self.pre_nms_topk = rpn.PRE_NMS_TOPK_TEST
        self.post_nms_topk = rpn.POST_NMS_TOPK_TEST
        self.nms_thresh = rpn.NMS_THRESH
        self.min_size = cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE

    def forward(self, features: dict, image_size):
        """(R, 4) float32 proposals in resized-image pixels and their (R,) logits, best first."""
        boxes, logits, level_ids = [], [], []
        for level, (name, stride, cell) in enumerate(zip(self.in_features, self.strides, self.cell_anchors)):
            objectness, deltas = self.rpn_head(features[name])
            _, num_anchors, height, width = objectness.shape
            objectness = objectness[0].permute(1, 2, 0).reshape(-1).float()
            top_logits, top = objectness.topk(min(self.pre_nms_topk, len(objectness)))
            # Only the kept anchors are decoded: the same numbers as decoding all, far fewer of them.
            deltas = deltas[0].view(num_anchors, 4, height, width).permute(2, 3, 0, 1).reshape(-1, 4)
            anchors = grid_anchors(cell.to(deltas.device), height, width, stride, self.offset)
            boxes.append(box_ops.apply_deltas(deltas[top], anchors[top], self.weights))
            logits.append(top_logits)
            level_ids.append(torch.full((len(top),), level, dtype=torch.int64, device=deltas.device))
        boxes, logits, level_ids = torch.cat(boxes), torch.cat(logits), torch.cat(level_ids)
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(logits)
        boxes, logits, level_ids = boxes[valid], logits[valid], level_ids[valid]
        boxes = box_ops.clip(boxes, image_size)
        keep = box_ops.nonempty(boxes, self.min_size)
        boxes, logits, level_ids = boxes[keep], logits[keep], level_ids[keep]
        keep = batched_nms(boxes, logits, level_ids, self.nms_thresh)[: self.post_nms_topk]
        return boxes[keep], logits[keep]

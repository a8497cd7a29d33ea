"""The whole detector: preprocessing, backbone, RPN, ROI heads; detectron2's GeneralizedRCNN at test time."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..image_input import normalize_and_pad, resize_bilinear, shortest_edge_size
from .backbone import FPN
from .checkpoint import check_fits
from .config import CfgNode, describe, fpn_levels
from .layers import fold_norms
from .postprocess import paste_masks, rescale_boxes
from .roi_heads import ROIHeads
from .rpn import RPN


@dataclass
class Detections:
    """One image's detections in original-image pixels, sorted by score."""

    boxes: torch.Tensor  # (N, 4) xyxy float32
    scores: torch.Tensor  # (N,)
    classes: torch.Tensor  # (N,) int64
    masks: torch.Tensor  # (N, H, W) bool
    timings: dict  # seconds per stage


class CutLERModel(nn.Module):
    """Mask R-CNN or Cascade Mask R-CNN on a ResNet-FPN, built from a resolved config."""

    def __init__(self, cfg: CfgNode):
        super().__init__()
        self.cfg = cfg
        self.backbone = FPN(cfg)
        names = fpn_levels(cfg)
        strides = {name: 2 ** int(name[1:]) for name in names}
        channels = self.backbone.out_channels
        self.proposal_generator = RPN(cfg, channels, [strides[n] for n in cfg.MODEL.RPN.IN_FEATURES])
        self.roi_heads = ROIHeads(cfg, channels, strides)

    @property
    def device(self) -> torch.device:
        return self.roi_heads.mask_head.predictor.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.roi_heads.mask_head.predictor.weight.dtype

    def preprocess(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """The padded, normalised (1, 3, H', W') float32 input and the resized (unpadded) size."""
        height, width = rgb.shape[:2]
        size = shortest_edge_size(height, width, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
        resized = resize_bilinear(rgb, size)
        if self.cfg.INPUT.FORMAT == "BGR":  # PIXEL_MEAN/STD are then in BGR order too
            resized = resized[:, :, ::-1]
        # Normalised in float32 whatever the network's dtype, as detectron2 does.
        pixels = normalize_and_pad(resized, self.cfg.MODEL.PIXEL_MEAN, self.cfg.MODEL.PIXEL_STD,
                                   self.backbone.size_divisibility)
        return torch.from_numpy(pixels)[None].to(self.device), size

    def forward(self, rgb: np.ndarray, *, score_thresh: float, max_detections: int) -> Detections:
        """Detect objects in a uint8 RGB image."""
        timings = {}
        clock = _Clock(self.device, timings)
        image, resized = self.preprocess(rgb)
        image = image.to(self.dtype).contiguous(memory_format=torch.channels_last)
        clock.lap("preprocess_s")
        features = self.backbone(image)
        clock.lap("backbone_s")
        proposals, _ = self.proposal_generator(features, resized)
        clock.lap("rpn_s")
        levels = self.roi_heads.pooling_levels(features)
        del features  # the poolers' copies replace the channels-last maps: less memory at the heads' peak
        boxes, scores, classes = self.roi_heads.detect(levels, proposals, resized, score_thresh, max_detections)
        clock.lap("box_heads_s")
        probs = self.roi_heads.masks(levels, boxes, classes)
        clock.lap("mask_head_s")
        original = rgb.shape[:2]
        boxes, keep = rescale_boxes(boxes, resized, original)
        boxes, scores, classes, probs = boxes[keep], scores[keep], classes[keep], probs[keep]
        masks = paste_masks(probs, boxes, original)
        clock.lap("postprocess_s")
        return Detections(boxes, scores, classes, masks, timings)


class _Clock:
    """Per-stage wall-clock seconds; waits for the GPU so each stage is charged its own work."""

    def __init__(self, device: torch.device, timings: dict):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.timings = timings
        self.start = time.perf_counter()

    def lap(self, name: str):
        self.sync()
        now = time.perf_counter()
        self.timings[name] = now - self.start
        self.start = now


def build_model(cfg: CfgNode, state: dict | None = None, *, source="the checkpoint", fold: bool = True,
                device="cpu", dtype=torch.float32) -> CutLERModel:
    """The model in eval mode, with ``state`` loaded strictly (random weights when None).

    With ``fold``, norms are folded into their convs after loading: the same function with fewer
    passes over the activations (see ``layers.fold_norms``). Convolutions run channels-last, which
    oneDNN and cuDNN run without reordering every activation (the backbone ran 1.6x faster on a
    2-core CPU).
    """
    if state is None:
        model = CutLERModel(cfg)
    else:
        with torch.device("meta"):
            model = CutLERModel(cfg)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        check_fits(state, expected, source, describe(cfg))
        model.load_state_dict(state, strict=True, assign=True)
    model.float()
    if fold:
        fold_norms(model)
    model.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    return model.eval().requires_grad_(False)

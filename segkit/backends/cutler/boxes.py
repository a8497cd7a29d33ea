"""Box arithmetic and multi-level RoI pooling, in detectron2's conventions (xyxy, no "+1").

Box math always runs in float32, whatever the network's dtype: coordinates of a 1333-px image
need more precision than float16 has.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

SCALE_CLAMP = math.log(1000.0 / 16)
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights) -> torch.Tensor:
    """Decode (dx, dy, dw, dh) regressions (N, K*4) against boxes (N, 4) into xyxy boxes (N, K*4)."""
    deltas = deltas.float()
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=SCALE_CLAMP)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=SCALE_CLAMP)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    x1 = pred_ctr_x - 0.5 * pred_w
    y1 = pred_ctr_y - 0.5 * pred_h
    x2 = pred_ctr_x + 0.5 * pred_w
    y2 = pred_ctr_y + 0.5 * pred_h
    return torch.stack((x1, y1, x2, y2), dim=-1).reshape(deltas.shape)


def clip(boxes: torch.Tensor, size) -> torch.Tensor:
    """Boxes (..., 4) clamped to an image of size (h, w)."""
    h, w = size
    return torch.stack((boxes[..., 0].clamp(min=0, max=w), boxes[..., 1].clamp(min=0, max=h),
                        boxes[..., 2].clamp(min=0, max=w), boxes[..., 3].clamp(min=0, max=h)), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Which boxes have both sides longer than ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


class MultiLevelRoIAlign:
    """RoIAlign of each box on the pyramid level its size picks (FPN paper, eq. 1).

    Pooling runs in float32 on float32 copies of the features, so low-precision networks still
    sample at exact box coordinates.
    """

    def __init__(self, output_size: int, strides: list[int], sampling_ratio: int, aligned: bool):
        self.output_size = output_size
        self.scales = [1.0 / s for s in strides]
        self.min_level = int(math.log2(strides[0]))
        self.max_level = int(math.log2(strides[-1]))
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """Pyramid index (0 = finest) for each box."""
        sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(CANONICAL_LEVEL + torch.log2(sizes / CANONICAL_BOX_SIZE + 1e-8))
        return torch.clamp(levels, min=self.min_level, max=self.max_level).to(torch.int64) - self.min_level

    def __call__(self, features: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """Pooled (N, C, S, S) float32 features of the boxes (N, 4) of image 0."""
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)
        if len(features) == 1:
            return self._pool(features[0], rois, 0)
        levels = self.levels(boxes)
        out = features[0].new_zeros(len(boxes), features[0].shape[1], self.output_size, self.output_size)
        for level, feature in enumerate(features):
            index = torch.nonzero(levels == level).squeeze(1)
            if len(index):
                out[index] = self._pool(feature, rois[index], level)
        return out

    def _pool(self, feature, rois, level):
        return roi_align(feature, rois.to(feature.dtype), self.output_size, self.scales[level],
                         self.sampling_ratio, self.aligned)

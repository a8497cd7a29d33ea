"""From resized-image detections back to the original image: box rescaling and mask pasting."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from . import boxes as box_ops

MASK_THRESHOLD = 0.5


def rescale_boxes(boxes: torch.Tensor, resized_size, original_size):
    """Boxes scaled from the resized to the original image and clipped; plus which are non-empty."""
    (h, w), (rh, rw) = original_size, resized_size
    boxes = boxes.clone()
    boxes[:, 0::2] *= w / rw
    boxes[:, 1::2] *= h / rh
    boxes = box_ops.clip(boxes, (h, w))
    return boxes, box_ops.nonempty(boxes)


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size) -> torch.Tensor:
    """(N, H, W) bool masks: each (M, M) probability map resampled into its box, then >= 0.5.

    Pixel centres are sampled bilinearly (``grid_sample``, zeros outside the map); only a window of
    the box plus one pixel is computed, since the map cannot reach 0.5 further out.
    """
    img_h, img_w = image_size
    out = torch.zeros((len(boxes), img_h, img_w), dtype=torch.bool, device=boxes.device)
    for i in range(len(boxes)):
        box = boxes[i].float()
        x1, y1, x2, y2 = (float(v) for v in box)
        left, top = max(math.floor(x1) - 1, 0), max(math.floor(y1) - 1, 0)
        right, bottom = min(math.ceil(x2) + 1, img_w), min(math.ceil(y2) + 1, img_h)
        ys = torch.arange(top, bottom, device=box.device, dtype=torch.float32) + 0.5
        xs = torch.arange(left, right, device=box.device, dtype=torch.float32) + 0.5
        ys = (ys - box[1]) / (box[3] - box[1]) * 2 - 1
        xs = (xs - box[0]) / (box[2] - box[0]) * 2 - 1
        grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=2)
        window = F.grid_sample(probs[i][None, None].float(), grid[None], align_corners=False)
        out[i, top:bottom, left:right] = window[0, 0] >= MASK_THRESHOLD
    return out

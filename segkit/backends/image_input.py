"""detectron2's test-time input, which CutLER and OneFormer both use: resize, normalise, pad."""

from __future__ import annotations

import math

import numpy as np


def shortest_edge_size(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """``ResizeShortestEdge``: shortest side to ``short_edge``, longest at most ``max_size``.

    Rounds half up, as detectron2 does (transformers truncates: 480x640 -> 800x1066, not 800x1067).
    Sides are kept at least 1 px, so extremely elongated images still run (detectron2 fails there).
    """
    scale = short_edge / min(height, width)
    new_h, new_w = (short_edge, scale * width) if height < width else (scale * height, short_edge)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return max(int(new_h + 0.5), 1), max(int(new_w + 0.5), 1)


def resize_bilinear(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's bilinear filter on the uint8 image, as detectron2's ``ResizeTransform``
    (torchvision's antialiased resize differs by a grey level in many pixels)."""
    from PIL import Image

    height, width = size
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def padded_size(height: int, width: int, divisibility: int) -> tuple[int, int]:
    return math.ceil(height / divisibility) * divisibility, math.ceil(width / divisibility) * divisibility


def normalize_and_pad(image: np.ndarray, mean, std, divisibility: int) -> np.ndarray:
    """(pixel - mean) / std in float32, 3 x Hp x Wp, zero-padded bottom/right to a multiple of
    ``divisibility`` (zero in normalised space, i.e. the mean colour)."""
    height, width = image.shape[:2]
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    out = np.zeros((3, *padded_size(height, width, divisibility)), dtype=np.float32)
    out[:, :height, :width] = (image.transpose(2, 0, 1).astype(np.float32) - mean) / std
    return out

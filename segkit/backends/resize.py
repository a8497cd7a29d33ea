"""detectron2's test-time resize, which CutLER and OneFormer both use."""

from __future__ import annotations

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

"""MaskCut's input: the photo squashed to a square, then to a multiple of the patch size (TokenCut's
``resize_pil``), normalised with the ImageNet statistics, exactly as CutLER's ``maskcut()`` does."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def square_resize(rgb: np.ndarray, fixed_size: int) -> np.ndarray:
    """``I_new``: the photo resized to ``fixed_size`` x ``fixed_size`` with LANCZOS (aspect ratio not kept).

    The masks come out at this size; the CRF also reads this image."""
    from PIL import Image

    return np.array(Image.fromarray(rgb).resize((fixed_size, fixed_size), Image.LANCZOS))


def model_input(square: np.ndarray, patch_size: int) -> np.ndarray:
    """TokenCut's ``resize_pil``: the side rounded (Python's half-to-even ``round``) to a multiple of
    the patch size, LANCZOS again when that changes it."""
    from PIL import Image

    side = square.shape[0]
    new_side = int(round(side / patch_size)) * patch_size
    if new_side == side:
        return square
    return np.array(Image.fromarray(square).resize((new_side, new_side), Image.LANCZOS))


def pixel_values(rgb: np.ndarray):
    """torchvision's ``ToTensor`` + ``Normalize`` in float32: (1, 3, H, W)."""
    import torch

    pixels = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div(255)
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return pixels.sub(mean).div(std)[None]

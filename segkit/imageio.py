"""Reading images: any common file or array in, a uint8 HxWx3 RGB array out."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .errors import ImageReadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def _to_rgb(img) -> np.ndarray:
    """Convert any PIL mode to 8-bit RGB, scaling 16/32-bit data rather than clipping it."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        arr = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    # Alpha is dropped, not composited: the reference pipelines (detectron2's read_image) do the same.
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file (EXIF orientation applied, first frame of animations) to RGB uint8."""
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: file is empty")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if limit and img.width * img.height > limit:
                    reason = f"{path}: {img.width}x{img.height} pixels is over the limit of {limit}; raise it with "
                    raise ImageReadError(reason + "max_pixels=", cli=reason + "--max-pixels")
                img.seek(0)
                img = ImageOps.exif_transpose(img)
                img.load()
                return _to_rgb(img)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        reason = f"{path}: too many pixels (over {limit}); raise the limit with "
        raise ImageReadError(reason + "max_pixels=", cli=reason + "--max-pixels") from None
    except Exception as exc:  # PIL raises many types for bad files
        reason = str(exc) or type(exc).__name__
        if "cannot identify image file" in reason:
            reason = "not an image file (or an unsupported format)"
        elif "truncated" in reason.lower() or isinstance(exc, (OSError, SyntaxError)):
            reason = f"could not decode image ({reason}); the file may be truncated or corrupt"
        raise ImageReadError(f"{path}: {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _array_to_rgb(image: np.ndarray) -> np.ndarray:
    """An HxW, HxWx1, HxWx3 or HxWx4 uint8 array as HxWx3 RGB; anything else is refused, saying why."""
    shape = tuple(image.shape)
    if image.dtype != np.uint8:
        raise ImageReadError(f"image= array of shape {shape} has dtype {image.dtype}; pass uint8 RGB values "
                             "0..255 (e.g. (array * 255).astype(np.uint8))")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"image= array of shape {shape} is not HxW, HxWx1, HxWx3 or HxWx4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(f"image= array of shape {shape} has no pixels")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def as_rgb_array(image) -> np.ndarray:
    """Accept a path, a PIL image or an HxW(x1|x3|x4) uint8 array; return a uint8 RGB array.

    A channels-first (3, H, W) array is refused with a hint rather than read as a tall, thin image.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[1] > 4:  # never a 1-4 pixel tall photo
            raise ImageReadError(f"image= array of shape {tuple(image.shape)} looks channels-first; pass HxWxC, "
                                 "e.g. array.transpose(1, 2, 0)")
        return _array_to_rgb(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from PIL import ImageOps

        if image.width == 0 or image.height == 0:
            raise ImageReadError(f"image= PIL image of size {image.size} has no pixels")
        return _to_rgb(ImageOps.exif_transpose(image))
    raise ImageReadError(f"image= must be a path, a PIL image or a numpy array, not {type(image).__name__}")

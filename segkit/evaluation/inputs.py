"""Reading evaluation inputs with errors that name the file: JSON, label PNGs, image-name lookup."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import EvaluationInputError


def read_json(path, what: str):
    """The parsed JSON file ``path``; ``what`` says in the error what the file should be."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"{path}: no such file (expected {what})")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationInputError(f"{path}: not valid JSON ({exc}); expected {what}") from None


def read_png(path, *, convert: str | None = None) -> np.ndarray:
    """A label PNG as an array, never resampled: HxW integers (one channel, 8 or 16 bit), or
    converted to the Pillow mode ``convert`` (e.g. "RGBX" for panoptic ids).

    The file is read whole first: Pillow's many small reads of a chunked PNG cost less from memory
    than through a buffered file (a small label map reads about 8% faster).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as file:
            data = io.BytesIO(file.read())
        with Image.open(data) as img:
            if convert is not None:
                return np.asarray(img.convert(convert))
            if img.mode not in ("L", "P", "I;16", "I"):
                raise EvaluationInputError(f"{path}: a label PNG must have one channel (8 or 16 bit), "
                                           f"not mode {img.mode}")
            return np.asarray(img)
    except EvaluationInputError:
        raise
    except (FileNotFoundError, IsADirectoryError):
        raise EvaluationInputError(f"{path}: no such file") from None
    except UnidentifiedImageError:  # its message names the in-memory copy, not the file
        raise EvaluationInputError(f"{path}: could not read as PNG (not an image file)") from None
    except Exception as exc:  # PIL raises many types for bad files
        raise EvaluationInputError(f"{path}: could not read as PNG ({exc or type(exc).__name__})") from None


def pixel_runs(*maps: np.ndarray):
    """Each run of pixels (in reading order) along which every map keeps one value: the maps' values
    at the runs' starts, then the runs' lengths.

    Label maps are piecewise constant, so there are far fewer runs than pixels: counting overlaps
    over runs instead of pixels is much cheaper, and exact.
    """
    flat = [m.ravel() for m in maps]
    starts = np.empty(flat[0].size, dtype=bool)
    starts[:1] = True
    np.not_equal(flat[0][1:], flat[0][:-1], out=starts[1:])
    for values in flat[1:]:
        starts[1:] |= values[1:] != values[:-1]
    first = np.flatnonzero(starts)
    lengths = np.empty_like(first)  # as np.diff(first, append=size), which costs more than the subtraction
    np.subtract(first[1:], first[:-1], out=lengths[:-1])
    lengths[-1:] = flat[0].size - first[-1:]  # slices: an empty map has no runs
    return (*(values[first] for values in flat), lengths)


def check_size(path, array: np.ndarray, height: int, width: int, against: str):
    """A label map must have its image's size exactly: scoring a resized map would be wrong."""
    if array.shape[:2] != (height, width):
        raise EvaluationInputError(f"{path}: {array.shape[1]}x{array.shape[0]} pixels but {against} is "
                                   f"{width}x{height}; write predictions at the image's own size")


class ImageIndex:
    """Find a ground-truth image by the name a prediction records for it.

    An exact ``file_name`` wins; else the base name (``/data/val2017/x.jpg`` finds ``x.jpg``) when only
    one ground-truth image has it.
    """

    def __init__(self, images):
        self.by_name = {}
        by_base = {}
        for image in images:
            self.by_name[str(image["file_name"])] = image["id"]
            by_base.setdefault(os.path.basename(str(image["file_name"])), []).append(image["id"])
        self.by_base = {name: ids[0] for name, ids in by_base.items() if len(ids) == 1}

    def lookup(self, name):
        """The ground-truth image id for ``name``, or None."""
        name = str(name)
        if name in self.by_name:
            return self.by_name[name]
        return self.by_base.get(os.path.basename(name.replace("\\", "/")))

"""COCO run-length encoding of a mask from the box it lies in, byte-for-byte what pycocotools writes.

pycocotools encodes a full-size column-major copy of every mask; for a 12 MP photo with 100 instances
that is 1.2 GB of copies. Here only the mask's box is read: runs come from where each column of the
box changes value, and the compressed string is built with numpy (pycocotools' ``rleToString``:
counts from the fourth on as differences from the count two before, in 5-bit groups with a
continuation bit, offset by 48).
"""

from __future__ import annotations

import numpy as np

GROUPS = 7  # 5-bit groups enough for any 32-bit count


def box_slices(box, height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of an xyxy box, widened by a pixel and clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (slice(max(0, int(np.floor(y1)) - 1), min(height, int(np.ceil(y2)) + 1)),
            slice(max(0, int(np.floor(x1)) - 1), min(width, int(np.ceil(x2)) + 1)))


def run_lengths(mask: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Counts of alternating 0 and 1 runs over the mask in column-major order (zeros first), reading
    only ``mask[rows, cols]``, which must hold every pixel of the mask."""
    height, width = mask.shape
    crop = mask[rows, cols]
    padded = np.zeros((crop.shape[1], crop.shape[0] + 2), dtype=np.int8)  # one column of the box per row
    padded[:, 1:-1] = crop.T
    col, row = np.nonzero(np.diff(padded, axis=1))
    changes = (col + cols.start).astype(np.int64) * height + row + rows.start
    # A run that ends at the bottom of one column and goes on at the top of the next is one run.
    same = np.flatnonzero(changes[1:] == changes[:-1])
    if len(same):
        changes = np.delete(changes, np.concatenate([same, same + 1]))
    bounds = np.concatenate([[0], changes, [height * width]])
    counts = np.diff(bounds)
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]
    return counts


def compress(counts: np.ndarray) -> str:
    """pycocotools' compressed RLE string of uncompressed counts."""
    values = counts.astype(np.int64)
    if len(values) > 3:  # from the fourth count on (pycocotools: i > 2)
        values[3:] = counts[3:].astype(np.int64) - counts[1:-2].astype(np.int64)
    groups = np.zeros((len(values), GROUPS), dtype=np.int64)
    active = np.zeros((len(values), GROUPS), dtype=bool)
    going = np.ones(len(values), dtype=bool)
    for k in range(GROUPS):
        chunk = values & 0x1F
        values = values >> 5  # arithmetic shift, as in C for the negative differences
        more = np.where(chunk & 0x10, values != -1, values != 0)
        active[:, k] = going
        groups[:, k] = chunk | np.where(more, 0x20, 0)
        going = going & more
    return (groups[active] + 48).astype(np.uint8).tobytes().decode("ascii")


def encode(mask: np.ndarray, box=None) -> dict:
    """``{"size": [H, W], "counts": str}`` for a boolean mask; ``box`` (xyxy) must contain the mask."""
    height, width = mask.shape
    rows, cols = box_slices(box, height, width) if box is not None else (slice(0, height), slice(0, width))
    return {"size": [int(height), int(width)], "counts": compress(run_lengths(mask, rows, cols))}

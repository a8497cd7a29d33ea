"""COCO run-length encoding of a mask from the box it lies in, byte-for-byte what pycocotools writes.

pycocotools encodes a full-size column-major copy of every mask; for a 12 MP photo with 100 instances
that is 1.2 GB of copies. Here only the mask's box is read: runs come from where each column of the
box changes value (found along rows, as the box lies in memory), and the compressed string is built with numpy (pycocotools' ``rleToString``:
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
    only ``mask[rows, cols]``, which must hold every pixel of the mask.

    A run starts where a pixel differs from the one above it (or, at the top of the box, from the
    zero above): those changes are found in row-major order on the box as it lies in memory, with no
    transposed copy, then put in column-major order (a sort of the changes only).
    """
    height, width = mask.shape
    crop = mask[rows, cols]
    box_width = crop.shape[1]
    inside = np.flatnonzero(crop[1:] != crop[:-1])  # a change between rows r and r + 1 of the box
    top = np.flatnonzero(crop[0])  # the box's top row after the zero above it
    bottom = np.flatnonzero(crop[-1])  # the zero after the box's bottom row
    row = np.concatenate([inside // box_width + 1, np.zeros(len(top), np.intp), np.full(len(bottom), crop.shape[0])])
    col = np.concatenate([inside % box_width, top, bottom])
    changes = np.sort((col + cols.start).astype(np.int64) * height + row + rows.start)
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
    lengths = np.ones(len(values), dtype=np.int64)  # 5-bit groups per count
    groups = []  # per group k: (the counts that have a k-th group, its characters)
    index = np.arange(len(values))
    for _ in range(GROUPS):  # each pass only over the counts that still need a group
        chunk = values & 0x1F
        values = values >> 5  # arithmetic shift, as in C for the negative differences
        more = np.where(chunk & 0x10, values != -1, values != 0)
        groups.append((index, chunk + np.where(more, 0x20 + 48, 48)))
        index, values = index[more], values[more]
        if not len(index):
            break
        lengths[index] += 1
    starts = np.cumsum(lengths) - lengths
    text = np.empty(int(lengths.sum()), dtype=np.uint8)
    for k, (index, chars) in enumerate(groups):
        text[starts[index] + k] = chars
    return text.tobytes().decode("ascii")


def encode(mask: np.ndarray, box=None) -> dict:
    """``{"size": [H, W], "counts": str}`` for a boolean mask; ``box`` (xyxy) must contain the mask."""
    height, width = mask.shape
    rows, cols = box_slices(box, height, width) if box is not None else (slice(0, height), slice(0, width))
    return {"size": [int(height), int(width)], "counts": compress(run_lengths(mask, rows, cols))}

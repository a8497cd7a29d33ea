"""Bilinear resizing of mask logits, a band of output rows at a time.

OneFormer resizes every query's mask logits twice: to the padded input size, then, after cutting
the padding off, to the photo's own size. Done in one go that is queries x H x W floats, several
gigabytes for a large photo (a known out-of-memory of the original). Bilinear resizing is
separable, so any band of output rows follows from a few input rows.

The arithmetic per output value is that of torch's CPU kernel for
``F.interpolate(mode="bilinear", align_corners=False)``: the source position is
``scale * (dst + 0.5) - 0.5`` rounded once (a fused multiply-add), the value is
``lo * w_lo + hi * w_hi`` with the first product fused, along the columns first and then along the
rows. On the x86 builds we checked it matches ``F.interpolate`` bit for bit, and it never depends
on how the rows are split into bands.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Largest number of float32 values (queries x rows x width) one band may hold: 16 MiB.
BAND_VALUES = 1 << 22


@dataclass(frozen=True)
class LinearTable:
    """For each output position of a 1-D linear resize: its two input positions and their weights."""

    lo: torch.Tensor
    hi: torch.Tensor
    w_lo: torch.Tensor
    w_hi: torch.Tensor

    @classmethod
    def between(cls, n_in: int, n_out: int, device=None) -> LinearTable:
        scale = torch.tensor(n_in, dtype=torch.float32) / n_out
        dst = torch.arange(n_out, dtype=torch.float64)
        # float64 holds scale * (dst + 0.5) exactly, so one rounding to float32 equals the fused op.
        src = (scale.double() * (dst + 0.5) - 0.5).float().clamp_(min=0)
        lo = src.long().clamp_(max=n_in - 1)
        hi = lo + (lo < n_in - 1).long()
        w_hi = (src - lo.float()).clamp_(0, 1)
        w_lo = 1 - w_hi
        return cls(*(t.to(device) for t in (lo, hi, w_lo, w_hi)))

    def __len__(self) -> int:
        return len(self.lo)

    def __getitem__(self, part: slice) -> LinearTable:
        return LinearTable(self.lo[part], self.hi[part], self.w_lo[part], self.w_hi[part])

    def source_span(self) -> tuple[int, int]:
        """The input positions [start, stop) that these outputs read."""
        return int(self.lo[0]), int(self.hi[-1]) + 1


def resize_columns(x: torch.Tensor, table: LinearTable) -> torch.Tensor:
    """Resize the last axis of ``x`` (..., n_in) to (..., len(table))."""
    out = x.index_select(-1, table.hi).mul_(table.w_hi)
    return out.addcmul_(x.index_select(-1, table.lo), table.w_lo)


def resize_rows(x: torch.Tensor, table: LinearTable, first_row: int = 0) -> torch.Tensor:
    """Resize the second-to-last axis; ``x`` holds the input rows from ``first_row`` on."""
    out = x.index_select(-2, table.hi - first_row).mul_(table.w_hi[:, None])
    return out.addcmul_(x.index_select(-2, table.lo - first_row), table.w_lo[:, None])


def bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for (..., H, W) float32."""
    rows = LinearTable.between(x.shape[-2], size[0], x.device)
    cols = LinearTable.between(x.shape[-1], size[1], x.device)
    return resize_rows(resize_columns(x, cols), rows)


class MaskUpsampler:
    """OneFormer's mask logits at the photo's size, a band of rows at a time.

    Row ``y`` of ``rows(y, y + 1)`` is row ``y`` of
    ``bilinear(bilinear(logits, padded_hw)[:, :h, :w], image_hw)`` with ``(h, w) = resized_hw``.
    """

    def __init__(self, logits: torch.Tensor, padded_hw, resized_hw, image_hw):
        (hm, wm), (h, w) = logits.shape[-2:], resized_hw
        device = logits.device
        self.logits = logits
        self.padded_hw = tuple(padded_hw)
        self.image_hw = tuple(image_hw)
        # Cutting off the padding = keeping the first h rows and w columns of the padded-size tables.
        self._padded_rows = LinearTable.between(hm, padded_hw[0], device)[:h]
        self._padded_cols = LinearTable.between(wm, padded_hw[1], device)[:w]
        self._image_rows = LinearTable.between(h, image_hw[0], device)
        self._image_cols = LinearTable.between(w, image_hw[1], device)

    @property
    def num_queries(self) -> int:
        return self.logits.shape[0]

    def rows(self, start: int, stop: int, queries=None) -> torch.Tensor:
        """Mask logits (queries, stop - start, W) of image rows [start, stop)."""
        logits = self.logits if queries is None else self.logits[queries]
        wanted = self._image_rows[start:stop]
        first, last = wanted.source_span()
        resized = self._resized_rows(logits, first, last)
        return resize_rows(resize_columns(resized, self._image_cols), wanted, first)

    def _resized_rows(self, logits: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the logits at the resized (padded, then cropped) input size."""
        wanted = self._padded_rows[start:stop]
        first, last = wanted.source_span()
        return resize_rows(resize_columns(logits[:, first:last], self._padded_cols), wanted, first)

    def bands(self, n_queries: int | None = None, band_rows: int | None = None):
        """(start, stop) row ranges covering the image, each small enough for ``n_queries`` masks."""
        height, width = self.image_hw
        if band_rows is None:
            per_row = max(1, n_queries if n_queries is not None else self.num_queries) * width
            band_rows = max(1, BAND_VALUES // per_row)
        for start in range(0, height, band_rows):
            yield start, min(start + band_rows, height)

"""2-D neighborhood attention (NA) with relative position bias, in pure PyTorch.

Same layouts, arguments and results as legacy NATTEN's ``natten2dqkrpb`` / ``natten2dav`` (NATTEN <= 0.17), which
DiNAT checkpoints were trained with, so segkit needs no NATTEN build on any platform.

Semantics, per axis of length ``L`` with odd kernel size ``K`` and dilation ``d`` (requires ``L >= K * d``): query
``i`` belongs to dilation group ``g = i % d`` (the ``Lg = ceil((L - g) / d)`` positions ``g, g + d, ...``) and sees
the ``K`` keys of its group whose window is centred on it, slid inwards at the borders so that it is never truncated:
``start = min(max(i // d - K // 2, 0), Lg - K)``, keys ``(start + t) * d + g``. The bias of key ``k`` is
``rpb[..., K - 1 + (k_row - i_row) / d, K - 1 + (k_col - i_col) / d]``. The last axis of ``attn`` is ``a * K + b``
(row offset ``a``, column offset ``b``). Nothing scales the query: callers do.

How it runs fast: dilation only interleaves independent sub-maps, so each dilation group is gathered into a plain
(``d = 1``) map. There, queries are cut into ``T x T`` tiles whose windows all lie in one ``(T+K-1)^2`` key region;
each tile is a small dense attention over its region, with the bias and a ``-inf`` mask outside each query's window.
Tiles that share one window pattern are batched into a single matmul or ``scaled_dot_product_attention`` call, and the
batches are chunked, so memory stays proportional to the map (never ``(H*W)^2``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["na2d", "na2d_av", "na2d_qk_rpb"]

TILE = 8  # query tile side: the fastest on 2 CPU cores for K = 7..11 (see benchmarks/oneformer_backbones.py)
CHUNK_ELEMENTS = 1 << 24  # elements of gathered regions/scores per batched call: bounds the extra memory


def na2d_qk_rpb(query, key, rpb, kernel_size: int, dilation: int = 1):
    """Attention scores ``(B, heads, H, W, K*K)``: each query's dot products with its window's keys, plus bias.

    ``query`` and ``key`` are ``(B, heads, H, W, D)``; ``rpb`` is ``(heads, 2K-1, 2K-1)`` or None.
    """
    _check(query, kernel_size, dilation, key=key, rpb=rpb)

    def scores(query_tiles, regions, pattern):
        (key_regions,) = regions
        dense = torch.matmul(query_tiles, key_regions.transpose(-1, -2))
        index = pattern.window_index.expand(*dense.shape[:-1], -1)
        picked = dense.gather(-1, index)
        return picked if rpb is None else picked + pattern.bias(rpb).to(picked.dtype)

    return _apply(query, [key], kernel_size, dilation, scores, kernel_size * kernel_size)


def na2d_av(attn, value, kernel_size: int, dilation: int = 1):
    """Weighted sums ``(B, heads, H, W, D)`` of each query's window of ``value`` by ``attn`` ``(B, heads, H, W, K*K)``."""
    _check(value, kernel_size, dilation, attn=attn)

    def weighted_sum(attn_tiles, regions, pattern):
        (value_regions,) = regions
        dense = attn_tiles.new_zeros(*attn_tiles.shape[:-1], value_regions.shape[-2])
        dense.scatter_(-1, pattern.window_index.expand(*attn_tiles.shape), attn_tiles)
        return torch.matmul(dense, value_regions)

    return _apply(attn, [value], kernel_size, dilation, weighted_sum, value.shape[-1])


def na2d(query, key, value, rpb, kernel_size: int, dilation: int = 1):
    """Fused ``na2d_av(softmax(na2d_qk_rpb(query, key, rpb)), value)``: same result, no ``K*K`` score tensor."""
    _check(query, kernel_size, dilation, key=key, value=value, rpb=rpb)

    def attend(query_tiles, regions, pattern):
        key_regions, value_regions = regions
        mask = pattern.window_mask(rpb, query_tiles.shape[1], query_tiles.dtype)
        return F.scaled_dot_product_attention(query_tiles, key_regions, value_regions, attn_mask=mask, scale=1.0)

    return _apply(query, [key, value], kernel_size, dilation, attend, value.shape[-1])


def _check(reference, kernel_size, dilation, **others):
    """Reject what legacy NATTEN rejects, with the reason."""
    if reference.dim() != 5:
        raise ValueError(f"neighborhood attention expects (B, heads, H, W, C) tensors, got shape {tuple(reference.shape)}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    batch, heads, height, width = reference.shape[:4]
    if height < kernel_size * dilation or width < kernel_size * dilation:
        raise ValueError(
            f"a {height}x{width} map is smaller than kernel_size * dilation = {kernel_size * dilation}; pad it first")
    for name, tensor in others.items():
        if tensor is None:
            continue
        if name == "rpb":
            expected = (heads, 2 * kernel_size - 1, 2 * kernel_size - 1)
        elif name == "attn":
            expected = (batch, heads, height, width, kernel_size * kernel_size)
        else:
            expected = tuple(reference.shape)
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {expected}")


def _apply(queries, sources, kernel_size, dilation, compute, out_channels):
    """Run ``compute`` on every dilation group as a plain NA map and reassemble the full-size result."""
    if dilation == 1:
        return _tiled(queries, sources, kernel_size, compute, out_channels)
    batch, heads, height, width = queries.shape[:4]
    result = queries.new_empty(batch, heads, height, width, out_channels)
    for rows in _axis_groups(height, dilation):
        for cols in _axis_groups(width, dilation):
            group_queries, *group_sources = (_gather_groups(x, rows, cols, dilation) for x in (queries, *sources))
            group_result = _tiled(group_queries, group_sources, kernel_size, compute, out_channels)
            target = _groups_view(result, rows, cols, dilation)
            target.copy_(group_result.view(batch, rows.count, cols.count, *group_result.shape[1:]))
    return result


@dataclass(frozen=True)
class _Groups:
    """Dilation groups ``first .. first+count-1`` of one axis; each holds ``length`` positions."""

    first: int
    count: int
    length: int


def _axis_groups(length, dilation):
    """The one or two classes of equally long dilation groups along an axis of ``length``."""
    full, extra = divmod(length, dilation)
    classes = [_Groups(extra, dilation - extra, full)]
    if extra:
        classes.insert(0, _Groups(0, extra, full + 1))
    return classes


def _groups_view(x, rows, cols, dilation):
    """View ``(B, groups_r, groups_c, heads, length_r, length_c, C)`` of ``x`` ``(B, heads, H, W, C)``: group
    ``(gr, gc)`` of the block, position ``(p, q)`` is ``x[:, :, (first_r + gr) + p*d, (first_c + gc) + q*d]``."""
    x = x.narrow(2, rows.first, (rows.length - 1) * dilation + rows.count).unfold(2, rows.count, dilation)
    x = x.narrow(3, cols.first, (cols.length - 1) * dilation + cols.count).unfold(3, cols.count, dilation)
    return x.permute(0, 5, 6, 1, 2, 3, 4)


def _gather_groups(x, rows, cols, dilation):
    """The groups of one block as a batch of plain maps ``(B*groups, heads, length_r, length_c, C)`` (one copy)."""
    groups = _groups_view(x, rows, cols, dilation)
    return groups.reshape(-1, *groups.shape[3:])


@dataclass(frozen=True)
class _Run:
    """Consecutive query tiles of one axis whose windows sit at the same places inside their key regions."""

    first_tile: int
    tiles: int
    region_start: int  # of the first tile; each next tile's region starts one tile further
    window: torch.Tensor  # (tile, K): region-relative key positions of each query of a tile
    bias_index: torch.Tensor  # (tile, K): index into one axis of the bias table


@dataclass(frozen=True)
class _AxisPlan:
    tile: int
    region: int
    tiles: int
    runs: tuple


@functools.lru_cache(maxsize=256)
def _axis_plan(length, kernel_size, tile):
    """Cut one axis into query tiles and group the tiles into runs (usually: first, interior, last)."""
    if length <= tile + kernel_size - 1:
        tile = length  # a small map is one tile: its region is the whole axis anyway
    tiles = -(-length // tile)
    region = min(tile + kernel_size - 1, length)
    position = torch.arange(tiles * tile).clamp(max=length - 1)  # padding queries repeat the last one
    start = (position - kernel_size // 2).clamp(0, length - kernel_size)
    region_start = start[::tile].clamp(max=length - region)
    offsets = torch.arange(kernel_size)
    keys = (start[:, None] + offsets).view(tiles, tile, kernel_size)
    window = keys - region_start[:, None, None]
    bias_index = kernel_size - 1 + keys - position.view(tiles, tile, 1)

    runs = []
    for n in range(tiles):
        previous = runs[-1] if runs else None
        if (previous is not None and torch.equal(previous.window, window[n])
                and torch.equal(previous.bias_index, bias_index[n])
                and int(region_start[n]) == previous.region_start + (n - previous.first_tile) * tile):
            runs[-1] = _Run(previous.first_tile, previous.tiles + 1, previous.region_start, previous.window,
                            previous.bias_index)
        else:
            runs.append(_Run(n, 1, int(region_start[n]), window[n], bias_index[n]))
    return _AxisPlan(tile, region, tiles, tuple(runs))


class _Pattern:
    """Where each query of a 2-D tile finds its ``K*K`` keys in the tile's flattened key region, and their biases."""

    def __init__(self, rows: _Run, cols: _Run, row_plan: _AxisPlan, col_plan: _AxisPlan, device):
        k = rows.window.shape[1]
        index = rows.window[:, None, :, None] * col_plan.region + cols.window[None, :, None, :]
        self.window_index = index.reshape(row_plan.tile * col_plan.tile, k * k).to(device)
        self.region_size = row_plan.region * col_plan.region
        self._rows, self._cols = rows, cols

    def bias(self, rpb):
        """``(heads, tile*tile, K*K)``."""
        rows = self._rows.bias_index.to(rpb.device)
        cols = self._cols.bias_index.to(rpb.device)
        bias = rpb[:, rows[:, None, :, None], cols[None, :, None, :]]
        return bias.reshape(rpb.shape[0], *self.window_index.shape)

    def window_mask(self, rpb, heads, dtype):
        """``(1, heads, tile*tile, region)`` additive mask: the bias inside each query's window, -inf elsewhere."""
        mask = torch.full((heads, *self.window_index.shape[:1], self.region_size), -math.inf,
                          dtype=dtype, device=self.window_index.device)
        values = torch.zeros(heads, *self.window_index.shape, dtype=dtype, device=mask.device) if rpb is None \
            else self.bias(rpb).to(dtype)
        return mask.scatter_(-1, self.window_index.expand(heads, -1, -1), values)[None]


def _tiled(queries, sources, kernel_size, compute, out_channels):
    """Plain (dilation 1) NA: ``compute(query_tiles, source_regions, pattern)`` on batches of query tiles.

    ``query_tiles`` is ``(n, heads, tile*tile, C)``, each source region ``(n, heads, region, C')``; ``compute`` returns
    ``(n, heads, tile*tile, out_channels)``.
    """
    batch, heads, height, width, channels = queries.shape
    row_plan = _axis_plan(height, kernel_size, TILE)
    col_plan = _axis_plan(width, kernel_size, TILE)
    th, tw = row_plan.tile, col_plan.tile
    padded_height, padded_width = row_plan.tiles * th, col_plan.tiles * tw
    if (padded_height, padded_width) != (height, width):
        queries = F.pad(queries, (0, 0, 0, padded_width - width, 0, padded_height - height))
    query_tiles = queries.view(batch, heads, row_plan.tiles, th, col_plan.tiles, tw, channels)
    result = queries.new_empty(batch, heads, padded_height, padded_width, out_channels)
    result_tiles = result.view(batch, heads, row_plan.tiles, th, col_plan.tiles, tw, out_channels)

    source_channels = sum(source.shape[-1] for source in sources)
    for cols in col_plan.runs:
        for rows in row_plan.runs:
            pattern = _Pattern(rows, cols, row_plan, col_plan, queries.device)
            per_tile_row = batch * cols.tiles * heads * (
                pattern.region_size * (source_channels + th * tw) + th * tw * (channels + out_channels))
            step = max(1, CHUNK_ELEMENTS // per_tile_row)
            for first in range(0, rows.tiles, step):
                count = min(step, rows.tiles - first)
                tile_rows = slice(rows.first_tile + first, rows.first_tile + first + count)
                tile_cols = slice(cols.first_tile, cols.first_tile + cols.tiles)
                chunk = query_tiles[:, :, tile_rows, :, tile_cols].permute(0, 2, 4, 1, 3, 5, 6)
                chunk = chunk.reshape(-1, heads, th * tw, channels)
                regions = [_regions(source, rows.region_start + first * th, count, row_plan, cols.region_start,
                                    cols.tiles, col_plan) for source in sources]
                out = compute(chunk, regions, pattern).reshape(batch, count, cols.tiles, heads, th, tw, out_channels)
                result_tiles[:, :, tile_rows, :, tile_cols] = out.permute(0, 3, 1, 4, 2, 5, 6)
    return result[:, :, :height, :width]


def _regions(source, row_start, row_tiles, row_plan, col_start, col_tiles, col_plan):
    """Key regions of ``row_tiles x col_tiles`` consecutive tiles, ``(B*tiles, heads, region, C)``, one copy."""
    batch, heads = source.shape[:2]
    rows = source.narrow(2, row_start, (row_tiles - 1) * row_plan.tile + row_plan.region)
    windows = rows.narrow(3, col_start, (col_tiles - 1) * col_plan.tile + col_plan.region)
    windows = windows.unfold(2, row_plan.region, row_plan.tile).unfold(3, col_plan.region, col_plan.tile)
    # (B, heads, row_tiles, col_tiles, C, region_rows, region_cols) -> tiles first, channels last
    windows = windows.permute(0, 2, 3, 1, 5, 6, 4)
    return windows.reshape(batch * row_tiles * col_tiles, heads, row_plan.region * col_plan.region, source.shape[-1])

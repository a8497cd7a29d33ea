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
(``d = 1``) map. There, queries are cut into ``T x T`` tiles; the windows of a tile's queries all lie in one key
region of about ``(T+K-1)^2`` positions, and on a key map padded at its borders these regions sit on a regular grid,
so one strided copy gathers the regions of a whole band of tiles. Each tile is then a small dense attention over its
region, with the bias inside each query's window and ``-inf`` elsewhere; tiles differ only near the borders, so a
band needs a few large ``scaled_dot_product_attention`` (or matmul) calls, one per kind of tile. Bands are sized
by ``CHUNK_ELEMENTS``, so memory stays proportional to the map (never ``(H*W)^2``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["na2d", "na2d_av", "na2d_qk_rpb"]

TILE = 8  # smallest query tile side: 6..10 ran about equally fast for DiNAT-L on 2 CPU cores; 8 wastes few keys
CHUNK_ELEMENTS = 1 << 24  # elements of gathered regions (and scores) per batched call: bounds extra memory


def na2d_qk_rpb(query, key, rpb, kernel_size: int, dilation: int = 1):
    """Attention scores ``(B, heads, H, W, K*K)``: each query's dot products with its window's keys, plus bias.

    ``query`` and ``key`` are ``(B, heads, H, W, D)``; ``rpb`` is ``(heads, 2K-1, 2K-1)`` or None.
    """
    _check(query, kernel_size, dilation, key=key, rpb=rpb)

    def biases(arrangements):
        return arrangements.bias(rpb).to(query.dtype)

    def scores(query_tiles, regions, window_index, bias):
        (key_regions,) = regions
        dense = torch.matmul(query_tiles, key_regions.transpose(-1, -2))
        picked = dense.gather(-1, window_index.expand(*dense.shape[:-1], -1))
        return picked if bias is None else picked + bias

    return _apply(query, [key], kernel_size, dilation, None if rpb is None else biases, scores,
                  kernel_size * kernel_size, True)


def na2d_av(attn, value, kernel_size: int, dilation: int = 1):
    """Each query's window of ``value`` ``(B, heads, H, W, D)``, summed with the weights ``attn`` ``(.., K*K)``."""
    _check(value, kernel_size, dilation, attn=attn)

    def weighted_sum(attn_tiles, regions, window_index, _):
        (value_regions,) = regions
        dense = attn_tiles.new_zeros(*attn_tiles.shape[:-1], value_regions.shape[-2])
        dense.scatter_(-1, window_index.expand(attn_tiles.shape), attn_tiles)
        return torch.matmul(dense, value_regions)

    return _apply(attn, [value], kernel_size, dilation, None, weighted_sum, value.shape[-1], True)


def na2d(query, key, value, rpb, kernel_size: int, dilation: int = 1):
    """Fused ``na2d_av(softmax(na2d_qk_rpb(query, key, rpb)), value)``: same result, no ``K*K`` score tensor."""
    _check(query, kernel_size, dilation, key=key, value=value, rpb=rpb)

    def masks(arrangements):
        return arrangements.masks(rpb, query.shape[1], query.dtype)

    def attend(query_tiles, regions, window_index, mask):
        key_regions, value_regions = regions
        return F.scaled_dot_product_attention(query_tiles, key_regions, value_regions, attn_mask=mask, scale=1.0)

    return _apply(query, [key, value], kernel_size, dilation, masks, attend, value.shape[-1], False)


def _check(reference, kernel_size, dilation, **others):
    """Reject what legacy NATTEN rejects, with the reason."""
    if reference.dim() != 5:
        raise ValueError(f"neighborhood attention expects (B, heads, H, W, C) tensors, got {tuple(reference.shape)}")
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


def _apply(queries, sources, kernel_size, dilation, prepare, compute, out_channels, materializes_scores):
    """Run the op (see ``_tiled``) on every dilation group as a plain NA map and reassemble the full-size result."""
    if dilation == 1:
        return _tiled(queries, sources, kernel_size, prepare, compute, out_channels, materializes_scores)
    batch, heads, height, width = queries.shape[:4]
    result = queries.new_empty(batch, heads, height, width, out_channels)
    for rows in _axis_groups(height, dilation):
        for cols in _axis_groups(width, dilation):
            group_queries, *group_sources = (_gather_groups(x, rows, cols, dilation) for x in (queries, *sources))
            group_result = _tiled(group_queries, group_sources, kernel_size, prepare, compute, out_channels,
                                  materializes_scores)
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
class _AxisPlan:
    """One axis cut into ``tiles`` query tiles of ``tile`` positions; tile ``m`` reads keys from a ``region`` that
    starts at ``m * tile`` once the keys are padded by ``pad_before`` / ``pad_after`` (padding is always masked).

    Tiles differ only in where their queries' windows sit inside the region (near the borders windows slide
    inwards); ``pattern`` numbers each tile's arrangement, ``window`` / ``bias_index`` ``(patterns, tile, K)`` hold
    the region-relative key positions and the bias-table indices of each arrangement.
    """

    tile: int
    tiles: int
    region: int
    pad_before: int
    pad_after: int
    pattern: torch.Tensor
    window: torch.Tensor
    bias_index: torch.Tensor

    def runs(self):
        """``(first_tile, count, pattern)`` for each stretch of consecutive tiles with one arrangement."""
        runs = []
        for tile, pattern in enumerate(self.pattern.tolist()):
            if runs and runs[-1][2] == pattern:
                runs[-1][1] += 1
            else:
                runs.append([tile, 1, pattern])
        return runs


def _region(length, kernel_size, tile):
    """Key region of a ``tile``: its queries' windows, grown when the last tile is too short to reach back to its
    windows' start. Padding by ``kernel_size // 2 + extra`` before the map puts tile ``m``'s region at ``m*tile``."""
    half = kernel_size // 2
    extra = max(0, half + 1 - (length - (-(-length // tile) - 1) * tile))
    return tile + kernel_size - 1 + extra, half + extra


@functools.lru_cache(maxsize=256)
def _axis_plan(length, kernel_size, tile):
    half = kernel_size // 2
    tile = max(tile, half + 1)  # so that only the first tile holds queries near the start
    # the smallest region (fewest wasted keys) among a few tile sizes, then the largest tile
    tile = min(range(tile, tile + 3), key=lambda t: (_region(length, kernel_size, t)[0], -t))
    region, pad_before = _region(length, kernel_size, tile)
    if length <= region:
        tile, region, pad_before = length, length, 0  # one tile over the whole axis wastes no more keys
    tiles = -(-length // tile)
    pad_after = (tiles - 1) * tile + region - pad_before - length
    position = torch.arange(tiles * tile).clamp(max=length - 1)  # padding queries repeat the last one
    keys = (position - half).clamp(0, length - kernel_size)[:, None] + torch.arange(kernel_size)
    region_start = torch.arange(tiles).repeat_interleave(tile) * tile - pad_before
    arrangement = torch.cat([keys - region_start[:, None], kernel_size - 1 + keys - position[:, None]], 1)
    unique, pattern = torch.unique(arrangement.view(tiles, -1), dim=0, return_inverse=True)
    unique = unique.view(-1, tile, 2 * kernel_size)
    return _AxisPlan(tile, tiles, region, pad_before, pad_after, pattern, unique[..., :kernel_size],
                     unique[..., kernel_size:])


class _Arrangements:
    """For one row arrangement and each column arrangement ``c``: where each query of a tile finds its ``K*K``
    keys in the tile's flattened region (``window_index[c]`` ``(tile_area, K*K)``), their biases and the additive
    mask that attention applies. Built for all column arrangements at once: a handful of small tensors."""

    def __init__(self, rows: _AxisPlan, row_pattern: int, cols: _AxisPlan, device):
        self.region_size = rows.region * cols.region
        row_window, col_window = rows.window[row_pattern], cols.window  # (Tr, K), (patterns, Tc, K)
        index = row_window[None, :, None, :, None] * cols.region + col_window[:, None, :, None, :]
        k = row_window.shape[1]
        self.window_index = index.reshape(len(col_window), rows.tile * cols.tile, k * k).to(device)
        self._row_bias = rows.bias_index[row_pattern][None, :, None, :, None].to(device)
        self._col_bias = cols.bias_index[:, None, :, None, :].to(device)

    def bias(self, rpb):
        """``(col_patterns, heads, tile_area, K*K)``."""
        bias = rpb[:, self._row_bias, self._col_bias]  # (heads, col_patterns, Tr, Tc, K, K)
        return bias.transpose(0, 1).reshape(len(self.window_index), rpb.shape[0], *self.window_index.shape[1:])

    def masks(self, rpb, heads, dtype):
        """``(col_patterns, 1, heads, tile_area, region)``: the bias inside each query's window, -inf elsewhere."""
        shape = (len(self.window_index), heads, *self.window_index.shape[1:])
        values = self.window_index.new_zeros(shape, dtype=dtype) if rpb is None else self.bias(rpb).to(dtype)
        masks = torch.full((*shape[:3], self.region_size), -math.inf, dtype=dtype, device=values.device)
        return masks.scatter_(-1, self.window_index[:, None].expand(shape), values)[:, None]


def _tiled(queries, sources, kernel_size, prepare, compute, out_channels, materializes_scores):
    """Plain (dilation 1) NA: ``compute(query_tiles, source_regions, window_index, prepared)`` on query tiles.

    ``query_tiles`` is ``(n, heads, tile_area, C)`` and each source region ``(n, heads, region, C')``: ``n`` tiles
    of one row and one column arrangement. ``window_index`` ``(tile_area, K*K)`` locates each query's keys in the
    flattened region; ``prepared`` is the column arrangement's item of ``prepare(arrangements)`` if given (biases,
    masks: computed once per row arrangement). ``compute`` returns ``(n, heads, tile_area, out_channels)``. Tiles
    are cut out in bands of as many whole tile rows of one row arrangement as ``CHUNK_ELEMENTS`` allows, so that a
    map costs a few large calls rather than many small ones.
    """
    batch, heads, height, width, channels = queries.shape
    rows, cols = _axis_plan(height, kernel_size, TILE), _axis_plan(width, kernel_size, TILE)
    padded_height, padded_width = rows.tiles * rows.tile, cols.tiles * cols.tile
    if (padded_height, padded_width) != (height, width):
        queries = F.pad(queries, (0, 0, 0, padded_width - width, 0, padded_height - height))
    key_padding = (0, 0, cols.pad_before, cols.pad_after, rows.pad_before, rows.pad_after)
    if any(key_padding):
        sources = [F.pad(source, key_padding) for source in sources]
    query_tiles = queries.view(batch, heads, rows.tiles, rows.tile, cols.tiles, cols.tile, channels)
    result = queries.new_empty(batch, heads, padded_height, padded_width, out_channels)
    result_tiles = result.view(batch, heads, rows.tiles, rows.tile, cols.tiles, cols.tile, out_channels)

    tile_area, region_size = rows.tile * cols.tile, rows.region * cols.region
    scores = tile_area if materializes_scores else 0
    per_tile = region_size * (sum(source.shape[-1] for source in sources) + scores) + tile_area * (
        channels + out_channels)
    step = max(1, CHUNK_ELEMENTS // (batch * cols.tiles * heads * per_tile))
    col_runs = cols.runs()
    for first, count, row_pattern in rows.runs():
        arrangements = _Arrangements(rows, row_pattern, cols, queries.device)
        prepared = prepare(arrangements) if prepare else [None] * len(arrangements.window_index)
        for start in range(first, first + count, step):
            band = slice(start, min(start + step, first + count))
            n = band.stop - band.start
            # column tiles outermost, so that each column run is one contiguous batch
            band_queries = query_tiles[:, :, band].permute(4, 0, 2, 1, 3, 5, 6)
            band_queries = band_queries.reshape(cols.tiles, batch * n, heads, tile_area, channels)
            band_regions = [_regions(source, band, rows, cols) for source in sources]
            for col_first, col_count, col_pattern in col_runs:
                tiles = slice(col_first, col_first + col_count)
                regions = [region[tiles].flatten(0, 1) for region in band_regions]
                out = compute(band_queries[tiles].flatten(0, 1), regions, arrangements.window_index[col_pattern],
                              prepared[col_pattern])
                out = out.reshape(col_count, batch, n, heads, rows.tile, cols.tile, out_channels)
                result_tiles[:, :, band, :, tiles] = out.permute(1, 3, 2, 4, 0, 5, 6)
    return result[:, :, :height, :width]


def _regions(source, band, rows, cols):
    """Key regions of the tiles in a band of tile rows, ``(col_tiles, B*rows, heads, region, C)``: one copy."""
    batch, heads, channels = source.shape[0], source.shape[1], source.shape[-1]
    n = band.stop - band.start
    windows = source.narrow(2, band.start * rows.tile, (n - 1) * rows.tile + rows.region)
    windows = windows.unfold(2, rows.region, rows.tile).unfold(3, cols.region, cols.tile)
    # (B, heads, n, col_tiles, C, region_rows, region_cols) -> (col_tiles, B, n, heads, region_rows, region_cols, C)
    windows = windows.permute(3, 0, 2, 1, 5, 6, 4)
    return windows.reshape(cols.tiles, batch * n, heads, rows.region * cols.region, channels)

"""DINO's ViT where it differs from transformers': position-embedding interpolation and the keys.

MaskCut feeds NCut the *keys* of the last block (its first LayerNorm, then the key projection),
CLS dropped. Only those are computed: the last block's attention and MLP, and the final LayerNorm,
never run. Earlier blocks use transformers' layers with fused (SDPA) attention.
"""

from __future__ import annotations

import math

DINO_LAYER_NORM_EPS = 1e-6  # DINO's ``partial(nn.LayerNorm, eps=1e-6)``; the hub configs say 1e-12


def dino_position_embeddings(embeddings, grid_h: int, grid_w: int):
    """Position embeddings for a ``grid_h`` x ``grid_w`` patch grid, interpolated the way DINO does.

    DINO calls bicubic interpolation with ``scale_factor = (n + 0.1) / sqrt(N)`` (transformers 5 uses
    ``size=(n, n)``); the sampling positions differ, so the keys would differ by tenths at 480 px.
    """
    import torch
    from torch.nn import functional as F

    table = embeddings.position_embeddings  # (1, 1 + N, C)
    positions = table.shape[1] - 1
    if grid_h * grid_w == positions and grid_h == grid_w:
        return table
    side = int(math.sqrt(positions))
    dim = table.shape[-1]
    grid = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((grid_h + 0.1) / math.sqrt(positions),
                                             (grid_w + 0.1) / math.sqrt(positions)), mode="bicubic")
    if tuple(grid.shape[-2:]) != (grid_h, grid_w):
        raise ValueError(f"position embeddings interpolated to {tuple(grid.shape[-2:])}, not {(grid_h, grid_w)}")
    return torch.cat((table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def last_block_keys(model, pixel_values):
    """The keys MaskCut uses, (C, h*w) for one image (B = 1): channel = head * head_dim + d."""
    import torch

    embeddings = model.embeddings
    patch = model.config.patch_size
    grid_h, grid_w = pixel_values.shape[2] // patch, pixel_values.shape[3] // patch
    tokens = embeddings.patch_embeddings(pixel_values)
    cls = embeddings.cls_token.expand(tokens.shape[0], -1, -1)
    hidden = torch.cat((cls, tokens), dim=1) + dino_position_embeddings(embeddings, grid_h, grid_w)
    for layer in model.layers[:-1]:
        hidden = layer(hidden)
    last = model.layers[-1]
    keys = last.attention.k_proj(last.layernorm_before(hidden))
    return keys[0, 1:].T

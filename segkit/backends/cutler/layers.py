"""Convolutions with an optional norm, named like detectron2's so checkpoints load as they are."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-5
GN_GROUPS = 32


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics; its state holds exactly detectron2's four buffers."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - BN_EPS)

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, BN_EPS)


BN_KINDS = ("BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")


def frozen(kind: str) -> str:
    """The norm a frozen stage ends up with: detectron2 turns every BN flavour into FrozenBN there."""
    return "FrozenBN" if kind in BN_KINDS else kind


def make_norm(kind: str, channels: int) -> nn.Module | None:
    """The norm layer of a detectron2 NORM name ('' means none); every BN flavour is plain BN in eval."""
    if kind == "":
        return None
    if kind == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if kind == "GN":
        return nn.GroupNorm(GN_GROUPS, channels)
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class ConvNorm(nn.Conv2d):
    """conv -> norm -> optional ReLU, with the norm stored as ``.norm`` (detectron2's key layout)."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, groups=1,
                 norm: str = "", bias: bool | None = None, relu: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                         bias=(norm == "") if bias is None else bias)
        self.norm = make_norm(norm, out_channels)
        self.relu = relu

    def forward(self, x):
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu_(x) if self.relu else x


def fold_norms(model: nn.Module) -> None:
    """Fold every BN (or frozen BN) into its convolution's weight and bias.

    At inference a BN is a per-channel affine map, so ``bn(conv(x)) == conv'(x)``; folding saves a
    pass over every activation. The new weights are computed in float64 to lose no precision.
    """
    for conv in model.modules():
        if not isinstance(conv, ConvNorm) or not isinstance(conv.norm, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            continue
        norm = conv.norm
        scale = norm.weight.double() / (norm.running_var.double() + BN_EPS).sqrt()
        shift = norm.bias.double() - norm.running_mean.double() * scale
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
        conv.norm = None

"""ResNet (bottleneck blocks) + FPN with detectron2's module names and semantics."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from .config import CfgNode
from .layers import ConvNorm, frozen

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGES = ("res2", "res3", "res4", "res5")


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with a residual; the stride sits in the 1x1 or the 3x3 (STRIDE_IN_1X1)."""

    def __init__(self, in_channels, out_channels, bottleneck_channels, *, stride, groups, stride_in_1x1, norm):
        super().__init__()
        self.shortcut = (ConvNorm(in_channels, out_channels, 1, stride=stride, bias=False, norm=norm)
                         if in_channels != out_channels else None)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False, norm=norm,
                              relu=True)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1,
                              groups=groups, bias=False, norm=norm, relu=True)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, bias=False, norm=norm)

    def forward(self, x):
        out = self.conv3(self.conv2(self.conv1(x)))
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out)


class Stem(nn.Module):
    """conv 7x7/2 + norm + ReLU, then max-pool 3x3/2."""

    def __init__(self, out_channels, norm):
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, 7, stride=2, padding=3, bias=False, norm=norm, relu=True)

    def forward(self, x):
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """The bottom-up path; builds the stages up to the deepest one the config asks for."""

    def __init__(self, cfg: CfgNode):
        super().__init__()
        r = cfg.MODEL.RESNETS
        freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
        self.stem = Stem(r.STEM_OUT_CHANNELS, frozen(r.NORM) if freeze_at >= 1 else r.NORM)
        self.out_features = list(r.OUT_FEATURES)
        num_stages = max(STAGES.index(name) + 1 for name in self.out_features)
        in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
        bottleneck = r.NUM_GROUPS * r.WIDTH_PER_GROUP
        self.stage_names = list(STAGES[:num_stages])
        self.out_channels = {}
        for index, name in enumerate(self.stage_names):
            norm = frozen(r.NORM) if freeze_at >= index + 2 else r.NORM
            blocks = []
            for b in range(BLOCKS_PER_STAGE[r.DEPTH][index]):
                blocks.append(Bottleneck(in_channels, out_channels, bottleneck,
                                         stride=2 if (b == 0 and index > 0) else 1, groups=r.NUM_GROUPS,
                                         stride_in_1x1=r.STRIDE_IN_1X1, norm=norm))
                in_channels = out_channels
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = out_channels
            out_channels *= 2
            bottleneck *= 2

    def forward(self, x) -> dict:
        x = self.stem(x)
        features = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                features[name] = x
        return features


class FPN(nn.Module):
    """Top-down pyramid: lateral 1x1 + nearest x2 upsampling, 3x3 outputs, and a stride-2 max-pool level."""

    def __init__(self, cfg: CfgNode):
        super().__init__()
        f = cfg.MODEL.FPN
        self.bottom_up = ResNet(cfg)
        self.in_features = list(f.IN_FEATURES)
        self.levels = [int(name[3:]) for name in self.in_features]
        self.fuse_avg = f.FUSE_TYPE == "avg"
        for name, level in zip(self.in_features, self.levels):
            in_channels = self.bottom_up.out_channels[name]
            self.add_module(f"fpn_lateral{level}", ConvNorm(in_channels, f.OUT_CHANNELS, 1, norm=f.NORM))
            self.add_module(f"fpn_output{level}",
                            ConvNorm(f.OUT_CHANNELS, f.OUT_CHANNELS, 3, padding=1, norm=f.NORM))
        # Features come in at strides 2**level, so padding the input to the coarsest one keeps
        # every upsampled map the size of the next finer one.
        self.size_divisibility = 2 ** self.levels[-1]
        self.out_channels = f.OUT_CHANNELS

    def forward(self, x) -> dict:
        bottom_up = self.bottom_up(x)
        outputs = {}
        top_down = None
        for name, level in reversed(list(zip(self.in_features, self.levels))):
            lateral = getattr(self, f"fpn_lateral{level}")(bottom_up.pop(name))  # frees the stage output early
            if top_down is not None:
                lateral += F.interpolate(top_down, scale_factor=2.0, mode="nearest")
                if self.fuse_avg:
                    lateral /= 2
            top_down = lateral
            outputs[f"p{level}"] = getattr(self, f"fpn_output{level}")(top_down)
        coarsest = self.levels[-1]
        outputs[f"p{coarsest + 1}"] = F.max_pool2d(outputs[f"p{coarsest}"], kernel_size=1, stride=2, padding=0)
        return {name: outputs[name] for name in sorted(outputs, key=lambda n: int(n[1:]))}

"""LESA-ResNet-50 and LESA-WRN-50 (Yang et al., arXiv 2107.05637), as the official configs build them.

A torchvision-style ResNet-50 (7x7 stem, max pool, bottlenecks with the stride on the 3x3, v1.5)
whose stage strides are (1, 2, 2, 1) -- the last stage keeps the 1/16 resolution -- and whose
bottleneck 3x3 convolutions are replaced by `attnzoo.layers.lesa.LESA` blocks in the stages named
by `lesa_stages` (default 3 and 4). In a stage listed in `first_conv_stages` the first block keeps
its convolution (default stages 1-3, so stage 4 is LESA throughout). A LESA bottleneck has no
BatchNorm after the LESA block (the block ends in BatchNorms of its own). `wide=True` doubles the
bottleneck width (WRN-50-2). All of this is constructor arguments, so other placements are
`model.kwargs` in a recipe.

Resolution: the network is built for `img_size` (default 224, per-stage maps 56, 28, 14, 14) and
refuses other input sizes with a `UserError` naming the built size. Loading weights trained at
another size resamples the relative position embeddings (attnzoo's addition; see
`attnzoo.layers.lesa`).

Faithful to `Chenglin-Yang/LESA_classification` (`lib/models/resnet.py`, `config/lesa_resnet.py`,
`config/lesa_wrn.py`): same parameter names, counts and outputs for the same weights. The official
derived `flatten_index` buffers are not part of our state dict (`attnzoo convert --from
lesa-official` drops them). Where a stage starts with a strided LESA block (not in the official
configs), our block is built for the stage's *input* size, which is what it sees.

Input (N, in_chans, img_size, img_size) -> logits (N, num_classes). Features (`features_only`,
`forward_intermediates`): the stem and the four stages, at strides 2, 4, 8, 16, 16 (default strides).
"""
from __future__ import annotations

import math

import torch
from timm.layers import register_notrace_function
from timm.models import generate_default_cfgs
from torch import nn

from ..errors import UserError
from ..layers.lesa import LESA, _pair
from ._registry import build, cfg, register
from ._resnet import ImageNetTrunk, make_stage

default_cfgs = generate_default_cfgs({
    name: cfg("Locally Enhanced Self-Attention: Combining Self-Attention and Convolution as Local and "
              "Context Terms (arXiv 2107.05637)", "https://github.com/Chenglin-Yang/LESA_classification",
              "unknown", pool_size=(14, 14), fixed_input_size=True)
    for name in ("lesa_resnet50", "lesa_wrn50")})


# A leaf for FX (the check runs, the size is not traced as data): timm's registration for timm's
# extractors, and torch.fx.wrap because the caller is a method outside the traced forward's module
# (timm only patches functions in the globals of the code it traces).
@register_notrace_function
@torch.fx.wrap
def check_input_size(x: torch.Tensor, img_size: tuple[int, int]) -> torch.Tensor:
    """x itself, or a UserError naming the size the network was built for."""
    if (x.shape[-2], x.shape[-1]) != img_size:
        raise UserError(f"this LESA network was built for {img_size[0]}x{img_size[1]} inputs, got "
                        f"{x.shape[-2]}x{x.shape[-1]}; build it with img_size={x.shape[-1]} (weights are "
                        "resampled on loading)")
    return x


class LESABottleneck(nn.Module):
    """ResNet bottleneck whose 3x3 convolution is a LESA block when `lesa` (kwargs dict) is given.

    (N, inplanes, H, W) -> (N, 4 * planes, H / stride, W / stride); `fmap_size` is (H, W).
    """
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, base_width=64, lesa=None,
                 fmap_size=None):
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.with_lesa = lesa is not None
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if self.with_lesa:
            self.conv2 = LESA(width, width, fmap_size=fmap_size, stride=stride, **lesa)
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if not self.with_lesa:
            out = self.bn2(out)
        out = self.bn3(self.conv3(self.relu(out)))
        return self.relu(out + shortcut)


def _conv_out(size: int, stride: int) -> int:
    """Output size of a 3x3 / padding 1 (or 1x1) convolution with `stride`."""
    return (size - 1) // stride + 1


class LESAResNet(ImageNetTrunk):
    """ResNet with LESA blocks; see the module docstring.

    Args:
        layers: bottlenecks per stage (ResNet-50: 3, 4, 6, 3).
        num_classes, in_chans, drop_rate: the usual classifier options.
        img_size: input size (int or (H, W)) the network is built for.
        wide: double the bottleneck width (WRN-50-2).
        strides: stride of each of the 4 stages.
        lesa_stages: stages (1-4) whose bottlenecks use LESA.
        first_conv_stages: stages whose first bottleneck keeps its convolution.
        lesa_kwargs: options of every LESA block (groups, pe_type, df_*, with_cp, impl).
    """

    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000, in_chans=3, img_size=224, wide=False,
                 strides=(1, 2, 2, 1), lesa_stages=(3, 4), first_conv_stages=(1, 2, 3), lesa_kwargs=None,
                 drop_rate=0.0, global_pool="avg"):
        super().__init__()
        if len(layers) != 4 or len(strides) != 4:
            raise UserError(f"layers {list(layers)} and strides {list(strides)} need 4 entries (one per stage)")
        bad = [s for s in (*lesa_stages, *first_conv_stages) if s not in (1, 2, 3, 4)]
        if bad:
            raise UserError(f"lesa_stages {list(lesa_stages)} / first_conv_stages {list(first_conv_stages)}: "
                            "stages are numbered 1, 2, 3, 4")
        lesa_kwargs = dict(groups=8, pe_type="classification", df_channel_shrink=(2,), df_kernel_size=(1, 1),
                           df_group=(1, 1), with_cp=False) | dict(lesa_kwargs or {})
        self.img_size = _pair(img_size)
        self.base_width = 128 if wide else 64
        self._init_stem(in_chans)
        size = tuple(_conv_out(_conv_out(s, 2), 2) for s in self.img_size)  # after stem and max pool
        self.stage_sizes, inplanes = [], 64
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), layers, strides, strict=True), 1):
            lesa = lesa_kwargs if i in lesa_stages else None
            out_size = tuple(_conv_out(s, stride) for s in size)
            # the first block sees the stage's input size (and keeps its conv in first_conv_stages)
            first = dict(lesa=None if i in first_conv_stages else lesa, fmap_size=size)
            stage, inplanes = make_stage(LESABottleneck, inplanes, planes, n, stride, first=first,
                                         base_width=self.base_width, lesa=lesa, fmap_size=out_size)
            self.add_module(f"layer{i}", stage)
            self.stage_sizes.append(size := out_size)
        reductions = [2] + [4 * math.prod(strides[:i + 1]) for i in range(4)]
        widths = [64] + [c * LESABottleneck.expansion for c in (64, 128, 256, 512)]
        self._init_trunk_features(widths, reductions)
        self._init_head(widths[-1], num_classes, global_pool, drop_rate)
        self._init_weights()

    def _init_weights(self):
        # As the official ResNet: He (fan_out) for Conv2d, BN2d to (1, 0); LESA's Conv1d and tables
        # keep the block's own initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _stem(self, x):
        return super()._stem(check_input_size(x, self.img_size))


def _lesa(name: str, pretrained, kwargs: dict, **defaults) -> LESAResNet:
    """Built through timm; a network built for another `img_size` says so in its pretrained cfg."""
    kwargs = {**defaults, **kwargs}
    if "img_size" in kwargs:
        h, w = _pair(kwargs["img_size"])
        size = dict(input_size=(kwargs.get("in_chans", 3), h, w), pool_size=(h // 16, w // 16))
        kwargs["pretrained_cfg_overlay"] = size | (kwargs.get("pretrained_cfg_overlay") or {})
    return build(LESAResNet, name, pretrained, kwargs)


@register
def lesa_resnet50(pretrained=False, **kwargs):
    """LESA-ResNet-50 (config/lesa_resnet.py): 79.55 top-1 in the seed; 224 px by default."""
    return _lesa("lesa_resnet50", pretrained, kwargs, layers=(3, 4, 6, 3), wide=False)


@register
def lesa_wrn50(pretrained=False, **kwargs):
    """LESA-WRN-50 (config/lesa_wrn.py, width x2): 80.18 top-1 in the seed; 224 px by default."""
    return _lesa("lesa_wrn50", pretrained, kwargs, layers=(3, 4, 6, 3), wide=True)

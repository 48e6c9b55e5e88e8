"""The pieces every attnzoo ResNet shares: residual blocks with an attention slot, stage
building, and the ImageNet trunk (stem, max pool, four stages) of the SENet and LESA networks
(the classifier head and feature interface are `_base.AttnzooNet`'s).

The attention slot sits after the last BatchNorm of a block, before the residual addition
(where SE sits in SENet); `attn_layer` is a `channels -> module` callable or None.
"""
import torch
from timm.models import checkpoint_seq
from torch import nn

from ._base import AttnzooNet


def conv_bn(cin: int, cout: int, k: int, stride: int = 1):
    """A bias-free k x k convolution ('same' padding) and its BatchNorm."""
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; (N, inplanes, H, W) -> (N, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn_layer=None):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(inplanes, planes, 3, stride)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.attn = attn_layer(planes) if attn_layer else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1, 3x3 (stride), 1x1 x4; (N, inplanes, H, W) -> (N, 4 planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn_layer=None):
        super().__init__()
        width = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(inplanes, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = conv_bn(planes, width, 1)
        self.attn = attn_layer(width) if attn_layer else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + shortcut)


def make_stage(block_cls, inplanes: int, planes: int, n: int, stride: int, first=None, **block_kwargs):
    """(nn.Sequential of n blocks, output channels); a 1x1 projection shortcut where shapes change.

    Every block is `block_cls(inplanes, planes, stride, downsample, **block_kwargs)`; the dict
    `first` overrides options of the first block (the one that changes the shape)."""
    out = planes * block_cls.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(*conv_bn(inplanes, out, 1, stride))
    blocks = [block_cls(inplanes, planes, stride, downsample, **(block_kwargs | (first or {})))]
    blocks += [block_cls(out, planes, **block_kwargs) for _ in range(1, n)]
    return nn.Sequential(*blocks), out


class ImageNetTrunk(AttnzooNet):
    """torchvision's ResNet trunk: 7x7/2 stem, 3x3/2 max pool, stages `layer1`..`layer4`.

    A subclass calls `_init_stem` first (the order of construction is the order of the random
    initialisation), then builds its stages and calls `_init_trunk_features`.
    """

    def _init_stem(self, in_chans: int):
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

    def _init_trunk_features(self, widths, reductions):
        """timm's feature_info for the stem and the four stages (channels and strides given)."""
        self.feature_info = [dict(num_chs=c, reduction=r, module=m) for c, r, m in
                             zip(widths, reductions, ("relu", "layer1", "layer2", "layer3", "layer4"),
                                 strict=True)]
        # the max pool belongs to stage 1: pruning to the stem tap drops it, so that forward_features
        # ends at the stem feature (as timm's ResNet)
        self.stage_modules = [("conv1", "bn1"), ("maxpool", "layer1"), ("layer2",), ("layer3",), ("layer4",)]

    def _stem(self, x):
        return self.relu(self.bn1(self.conv1(x)))

    def _stages(self):
        return [self._stem, lambda x: self.layer1(self.maxpool(x)), self.layer2, self.layer3, self.layer4]

    def forward_features(self, x):
        """(N, in_chans, H, W) -> (N, num_features, h, w) after the four stages."""
        x = self.maxpool(self._stem(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x, flatten=True)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

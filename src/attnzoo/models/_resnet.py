"""The pieces every attnzoo ResNet shares: residual blocks with an attention slot and stage
building (the classifier head and feature interface are `_base.AttnzooNet`'s).

The attention slot sits after the last BatchNorm of a block, before the residual addition
(where SE sits in SENet); `attn_layer` is a `channels -> module` callable or None.
"""
from torch import nn


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


def make_stage(block_cls, inplanes: int, planes: int, n: int, stride: int, attn_layer):
    """(nn.Sequential of n blocks, output channels); a 1x1 projection shortcut where shapes change."""
    out = planes * block_cls.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(*conv_bn(inplanes, out, 1, stride))
    blocks = [block_cls(inplanes, planes, stride, downsample, attn_layer)]
    blocks += [block_cls(out, planes, attn_layer=attn_layer) for _ in range(1, n)]
    return nn.Sequential(*blocks), out

"""ResNet for 32x32 images in the layout of bearpaw's pytorch-classification (the framework the
LSAS seed builds on): a 3x3 stem of 16 channels, three stages of 16/32/64 planes (stride 1, 2, 2),
global average pooling and a linear classifier.

Depth is 6n+2 for the basic block and 9n+2 for the bottleneck (expansion 4). Every block has an
attention slot after its last BatchNorm, before the residual addition (where SE sits in SENet);
`attn` names the block (see `attnzoo.layers.block_names()`), `attn_stages` the stages that get it.

Input (N, in_chans, H, W) -> logits (N, num_classes); any H, W (32 for CIFAR, 96 for STL-10).
Features (`features_only`, `forward_intermediates`): the stem and the three stages, at strides
1, 1, 2, 4.
"""
import math

import torch
from timm.models import checkpoint_seq, generate_default_cfgs
from torch import nn

from ..constants import CIFAR_MEAN, CIFAR_STD
from ..errors import UserError
from ..layers.factory import get_attn
from ._base import AttnzooNet
from ._registry import build, cfg, register
from ._resnet import BasicBlock, Bottleneck, make_stage

BLOCKS = ("basic", "bottleneck")


def blocks_per_stage(depth: int, block: str) -> int:
    """n for a depth of 6n+2 (basic) or 9n+2 (bottleneck); UserError naming valid depths otherwise."""
    if block not in BLOCKS:
        raise UserError(f"unknown CIFAR ResNet block '{block}'; valid: {', '.join(BLOCKS)}")
    per = 6 if block == "basic" else 9
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise UserError(f"depth must be an integer {per}n+2 for the {block} block, got {depth!r} "
                        f"({type(depth).__name__})")
    if depth < per + 2 or (depth - 2) % per:
        examples = ", ".join(str(per * n + 2) for n in (1, 2, 3, 6, 12, 18))
        raise UserError(f"depth {depth} does not fit the {block} block: it must be {per}n+2 "
                        f"(e.g. {examples})")
    return (depth - 2) // per


def cifar_cfg(paper: str, origin_url: str, license: str, **kwargs) -> dict:
    """A pretrained cfg for a 32 px CIFAR-10 network (final map 2x2 after four poolings for VGG,
    8x8 for the ResNets: give `pool_size`)."""
    return cfg(paper, origin_url, license, **(dict(num_classes=10, input_size=(3, 32, 32), crop_pct=1.0,
                                                   mean=CIFAR_MEAN, std=CIFAR_STD) | kwargs))


def resnet_cifar_cfg(paper="Deep Residual Learning for Image Recognition (He et al., CVPR 2016)",
                     origin_url="https://github.com/bearpaw/pytorch-classification") -> dict:
    return cifar_cfg(paper, origin_url, "mit", pool_size=(8, 8))


default_cfgs = generate_default_cfgs({
    name: resnet_cifar_cfg() for name in
    ("resnet_cifar", "resnet20_cifar", "resnet56_cifar", "resnet110_cifar", "resnet164_cifar")})


class CifarResNet(AttnzooNet):
    """CIFAR ResNet with an attention slot per block; see the module docstring."""

    def __init__(self, depth=20, block="basic", num_classes=10, in_chans=3, attn=None,
                 attn_kwargs=None, attn_stages=(1, 2, 3), drop_rate=0.0, global_pool="avg"):
        super().__init__()
        n = blocks_per_stage(depth, block)
        block_cls = BasicBlock if block == "basic" else Bottleneck
        bad = [s for s in attn_stages if s not in (1, 2, 3)]
        if bad:
            raise UserError(f"attn_stages {list(attn_stages)}: stages are numbered 1, 2, 3")
        attn_layer = get_attn(attn, **(attn_kwargs or {}))
        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, inplanes = [], 16
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            stage, inplanes = make_stage(block_cls, inplanes, planes, n, stride,
                                         attn_layer=attn_layer if i in attn_stages else None)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3 = stages
        widths = [16] + [c * block_cls.expansion for c in (16, 32, 64)]
        self.feature_info = [dict(num_chs=c, reduction=r, module=m)
                             for c, r, m in zip(widths, (1, 1, 2, 4), ("relu", "layer1", "layer2", "layer3"), strict=True)]
        self.stage_modules = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",)]
        self._init_head(widths[-1], num_classes, global_pool, drop_rate)
        self._init_weights()

    def _init_weights(self):
        # He init as in pytorch-classification: N(0, sqrt(2 / (k*k*out_channels))).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _stem(self, x):
        return self.relu(self.bn1(self.conv1(x)))

    def _stages(self):
        return [self._stem, self.layer1, self.layer2, self.layer3]

    def forward_features(self, x):
        """(N, in_chans, H, W) -> (N, num_features, H/4, W/4)."""
        x = self._stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq([self.layer1, self.layer2, self.layer3], x, flatten=True)
        return self.layer3(self.layer2(self.layer1(x)))


def build_cifar_resnet(variant: str, pretrained: bool, kwargs: dict, **defaults) -> CifarResNet:
    """`CifarResNet(**defaults, **kwargs)` through timm's builder, with four feature levels."""
    return build(CifarResNet, variant, pretrained, kwargs, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **defaults)


@register
def resnet_cifar(pretrained=False, **kwargs):
    """CIFAR ResNet of any valid depth: `depth=` (default 20) and `block=` basic | bottleneck."""
    return build_cifar_resnet("resnet_cifar", pretrained, kwargs)


@register
def resnet20_cifar(pretrained=False, **kwargs):
    """ResNet-20 (basic, 3x3 blocks): 0.27M params at 10 classes."""
    return build_cifar_resnet("resnet20_cifar", pretrained, kwargs, depth=20, block="basic")


@register
def resnet56_cifar(pretrained=False, **kwargs):
    """ResNet-56 (basic, 9 blocks a stage)."""
    return build_cifar_resnet("resnet56_cifar", pretrained, kwargs, depth=56, block="basic")


@register
def resnet110_cifar(pretrained=False, **kwargs):
    """ResNet-110 (basic, 18 blocks a stage)."""
    return build_cifar_resnet("resnet110_cifar", pretrained, kwargs, depth=110, block="basic")


@register
def resnet164_cifar(pretrained=False, **kwargs):
    """ResNet-164 (bottleneck, 18 blocks a stage): the LSAS seed's CIFAR backbone."""
    return build_cifar_resnet("resnet164_cifar", pretrained, kwargs, depth=164, block="bottleneck")

"""ResNet for 32x32 images in the layout of bearpaw's pytorch-classification (the framework the
LSAS seed builds on): a 3x3 stem of 16 channels, three stages of 16/32/64 planes (stride 1, 2, 2),
global average pooling and a linear classifier.

Depth is 6n+2 for the basic block and 9n+2 for the bottleneck (expansion 4). Every block has an
attention slot after its last BatchNorm, before the residual addition (where SE sits in SENet);
`attn` names the block (see `attnzoo.layers.block_names()`), `attn_stages` the stages that get it.

Input (N, 3, H, W) -> logits (N, num_classes); any H, W (pooling is global).
"""
import math

from torch import nn

from ..errors import UserError
from ..layers.factory import block_factory
from ._registry import build, register
from ._resnet import BasicBlock, Bottleneck, ClassifierHead, make_stage

BLOCKS = ("basic", "bottleneck")


def blocks_per_stage(depth: int, block: str) -> int:
    """n for a depth of 6n+2 (basic) or 9n+2 (bottleneck); UserError naming valid depths otherwise."""
    if block not in BLOCKS:
        raise UserError(f"unknown CIFAR ResNet block '{block}'; valid: {', '.join(BLOCKS)}")
    per = 6 if block == "basic" else 9
    if depth < per + 2 or (depth - 2) % per:
        examples = ", ".join(str(per * n + 2) for n in (1, 2, 3, 6, 12, 18))
        raise UserError(f"depth {depth} does not fit the {block} block: it must be {per}n+2 "
                        f"(e.g. {examples})")
    return (depth - 2) // per


class CifarResNet(ClassifierHead, nn.Module):
    """CIFAR ResNet with an attention slot per block; see the module docstring."""

    def __init__(self, depth=20, block="basic", num_classes=10, in_chans=3, attn=None,
                 attn_kwargs=None, attn_stages=(1, 2, 3), drop_rate=0.0):
        super().__init__()
        n = blocks_per_stage(depth, block)
        block_cls = BasicBlock if block == "basic" else Bottleneck
        bad = [s for s in attn_stages if s not in (1, 2, 3)]
        if bad:
            raise UserError(f"attn_stages {list(attn_stages)}: stages are numbered 1, 2, 3")
        attn_layer = block_factory(attn, **(attn_kwargs or {}))
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, inplanes = [], 16
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            stage, inplanes = make_stage(block_cls, inplanes, planes, n, stride,
                                         attn_layer if i in attn_stages else None)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = 64 * block_cls.expansion
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
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

    def forward_features(self, x):
        """(N, 3, H, W) -> (N, num_features, H/4, W/4)."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


@register
def resnet_cifar(pretrained=False, **kwargs):
    """CIFAR ResNet of any valid depth: `depth=` (default 20) and `block=` basic | bottleneck."""
    return build(CifarResNet, "resnet_cifar", pretrained, kwargs)


@register
def resnet20_cifar(pretrained=False, **kwargs):
    """ResNet-20 (basic, 3x3 blocks): 0.27M params at 10 classes."""
    return build(CifarResNet, "resnet20_cifar", pretrained, kwargs, depth=20, block="basic")


@register
def resnet56_cifar(pretrained=False, **kwargs):
    """ResNet-56 (basic, 9 blocks a stage)."""
    return build(CifarResNet, "resnet56_cifar", pretrained, kwargs, depth=56, block="basic")


@register
def resnet110_cifar(pretrained=False, **kwargs):
    """ResNet-110 (basic, 18 blocks a stage)."""
    return build(CifarResNet, "resnet110_cifar", pretrained, kwargs, depth=110, block="basic")


@register
def resnet164_cifar(pretrained=False, **kwargs):
    """ResNet-164 (bottleneck, 18 blocks a stage): the LSAS seed's CIFAR backbone."""
    return build(CifarResNet, "resnet164_cifar", pretrained, kwargs, depth=164, block="bottleneck")

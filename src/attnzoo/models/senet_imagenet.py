"""SENet and LSAS-SENet ResNet-18/34/50/101/152 for ImageNet, as the LSAS seed builds them
(`imagenet/senet.py`, `imagenet/lsas_senet.py`).

The backbone is torchvision's ResNet v1.5 layout (7x7 stem, max pool, stride in the 3x3 conv of
the bottleneck, 1x1 projection shortcut) with an attention slot after the last BatchNorm of each
block, before the residual addition.

- `senet_resnet*`: SE (hidden C // 16, Linear layers with bias) in every block of all four stages.
- `lsas_senet_resnet*`: SE + LSAS sub-attention of order 1 in the blocks of stages 3 and 4 only
  (stages 1 and 2 have no attention). Note this differs from the CIFAR networks, where LSAS sits
  in the last of three stages only. `order=` 0-5 changes the order.

Initialisation as in the seed: Kaiming-normal (fan_out) convolutions, BatchNorm 1 / 0, PyTorch's
default Linear init, `zero_init_residual=False`. Any attention block works (`attn=`, `attn_kwargs=`,
`attn_stages=`).

Input (N, in_chans, H, W) -> logits (N, num_classes); any H, W >= 32 (pooling is global).
Features (`features_only`, `forward_intermediates`): the stem and the four stages, at strides
2, 4, 8, 16, 32, as timm's ResNet.
"""
from timm.models import generate_default_cfgs
from torch import nn

from ..errors import UserError
from ..layers.factory import get_attn
from ._registry import build, cfg, register
from ._resnet import BasicBlock, Bottleneck, ImageNetTrunk, make_stage
from .senet_cifar import LSAS_PAPER, LSAS_REPO

DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
          50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
          152: (Bottleneck, (3, 8, 36, 3))}

default_cfgs = generate_default_cfgs({
    f"{kind}_resnet{depth}": cfg(LSAS_PAPER, LSAS_REPO, "mit")
    for kind in ("senet", "lsas_senet") for depth in DEPTHS})


class AttnResNet(ImageNetTrunk):
    """ImageNet ResNet of depth 18/34/50/101/152 with an attention slot per block.

    Args:
        depth: 18, 34 (basic block), 50, 101, 152 (bottleneck).
        attn, attn_kwargs: the attention block (`attnzoo.layers.block_names()`) and its options.
        attn_stages: the stages (1-4) whose blocks get it.
        layers: blocks in each of the four stages, instead of depth's (the block type stays
            depth's): SAN's ResNet-26/38 baselines are depth 50 with (1, 2, 4, 1), (2, 3, 5, 2).
    """

    def __init__(self, depth=50, num_classes=1000, in_chans=3, attn=None, attn_kwargs=None,
                 attn_stages=(1, 2, 3, 4), zero_init_residual=False, drop_rate=0.0, global_pool="avg",
                 layers=None):
        super().__init__()
        if depth not in DEPTHS:
            raise UserError(f"ImageNet ResNet depth {depth} is not valid; valid: "
                            f"{', '.join(map(str, DEPTHS))}")
        bad = [s for s in attn_stages if s not in (1, 2, 3, 4)]
        if bad:
            raise UserError(f"attn_stages {list(attn_stages)}: stages are numbered 1, 2, 3, 4")
        block_cls, default_layers = DEPTHS[depth]
        layers = tuple(layers or default_layers)  # blocks per stage; another count keeps depth's block
        if len(layers) != 4 or min(layers) < 1:
            raise UserError(f"layers {list(layers)}: four positive block counts, one per stage")
        attn_layer = get_attn(attn, **(attn_kwargs or {}))
        self._init_stem(in_chans)
        stages, inplanes = [], 64
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 2), strict=True), 1):
            stage, inplanes = make_stage(block_cls, inplanes, planes, n, stride,
                                         attn_layer=attn_layer if i in attn_stages else None)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        widths = [64] + [c * block_cls.expansion for c in (64, 128, 256, 512)]
        self._init_trunk_features(widths, (2, 4, 8, 16, 32))
        self._init_head(widths[-1], num_classes, global_pool, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)


def _attn_kwargs(kwargs, attn, **seed):
    """The seed's SE options (floor rounding, LSAS order) unless another block is asked for."""
    user = kwargs.pop("attn_kwargs", None) or {}
    return {**seed, **user} if kwargs.get("attn", attn) == attn else user


def _senet(depth, pretrained, kwargs):
    attn_kwargs = _attn_kwargs(kwargs, "se", rounding="floor")
    return build(AttnResNet, f"senet_resnet{depth}", pretrained, kwargs, depth=depth, attn="se",
                 attn_kwargs=attn_kwargs, attn_stages=(1, 2, 3, 4))


def _lsas(depth, pretrained, kwargs):
    attn_kwargs = _attn_kwargs(kwargs, "lsas_se", rounding="floor", order=kwargs.pop("order", 1))
    return build(AttnResNet, f"lsas_senet_resnet{depth}", pretrained, kwargs, depth=depth, attn="lsas_se",
                 attn_kwargs=attn_kwargs, attn_stages=(3, 4))


@register
def senet_resnet18(pretrained=False, **kwargs):
    """SE-ResNet-18 (SE in every block), the LSAS seed's `senet_resnet18`."""
    return _senet(18, pretrained, kwargs)


@register
def senet_resnet34(pretrained=False, **kwargs):
    """SE-ResNet-34 (SE in every block), the LSAS seed's `senet_resnet34`."""
    return _senet(34, pretrained, kwargs)


@register
def senet_resnet50(pretrained=False, **kwargs):
    """SE-ResNet-50 (SE in every block), the LSAS seed's `senet_resnet50`."""
    return _senet(50, pretrained, kwargs)


@register
def senet_resnet101(pretrained=False, **kwargs):
    """SE-ResNet-101 (SE in every block), the LSAS seed's `senet_resnet101`."""
    return _senet(101, pretrained, kwargs)


@register
def senet_resnet152(pretrained=False, **kwargs):
    """SE-ResNet-152 (SE in every block), the LSAS seed's `senet_resnet152`."""
    return _senet(152, pretrained, kwargs)


@register
def lsas_senet_resnet18(pretrained=False, **kwargs):
    """LSAS-SE-ResNet-18 (SE + LSAS order 1 in stages 3-4), the seed's `lsas_senet_resnet18`."""
    return _lsas(18, pretrained, kwargs)


@register
def lsas_senet_resnet34(pretrained=False, **kwargs):
    """LSAS-SE-ResNet-34 (SE + LSAS order 1 in stages 3-4), the seed's `lsas_senet_resnet34`."""
    return _lsas(34, pretrained, kwargs)


@register
def lsas_senet_resnet50(pretrained=False, **kwargs):
    """LSAS-SE-ResNet-50 (SE + LSAS order 1 in stages 3-4), the seed's `lsas_senet_resnet50`."""
    return _lsas(50, pretrained, kwargs)


@register
def lsas_senet_resnet101(pretrained=False, **kwargs):
    """LSAS-SE-ResNet-101 (SE + LSAS order 1 in stages 3-4), the seed's `lsas_senet_resnet101`."""
    return _lsas(101, pretrained, kwargs)


@register
def lsas_senet_resnet152(pretrained=False, **kwargs):
    """LSAS-SE-ResNet-152 (SE + LSAS order 1 in stages 3-4), the seed's `lsas_senet_resnet152`."""
    return _lsas(152, pretrained, kwargs)

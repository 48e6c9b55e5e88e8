"""The ResNet baselines of the SAN seed's table: ResNet-26, ResNet-38 and ResNet-50.

The SAN paper (Zhao, Jia, Koltun, CVPR 2020, Table 1 and the hszhao/SAN README) sets each SAN
against a bottleneck ResNet with the same number of blocks per stage: SAN10 / ResNet-26
(1, 2, 4, 1), SAN15 / ResNet-38 (2, 3, 5, 2), SAN19 / ResNet-50 (3, 4, 6, 3). The official
repository ships no code for them; their parameter counts (13.7M, 19.6M, 25.6M at 1000 classes)
are those of torchvision's bottleneck ResNet (7x7 stem, max pool, stride in the 3x3 convolution,
1x1 projection shortcuts) with these stage depths, which is what is built here: attnzoo's ImageNet
ResNet (`senet_imagenet.AttnResNet`) without attention. timm's `resnet26` is another network
((2, 2, 2, 2), 16.0M).

Trained with SAN's recipe (`san_resnet*_imagenet` recipes) so that `attnzoo compare` sets each SAN
against its own baseline. The table's "Flops" (2.4G, 3.2G, 4.1G) are SAN's counter, which adds
element-wise work to the multiply-adds: `attnzoo info` shows both (2.34G / 3.22G / 4.09G MACs;
2.37G / 3.26G / 4.13G with the element-wise terms, see `attnzoo.engine.flops`).

Input (N, in_chans, H, W) -> logits (N, num_classes); features as `senet_resnet50`'s.
"""
from timm.models import generate_default_cfgs

from ._registry import build, cfg, register
from .senet_imagenet import AttnResNet

SAN_RESNET_LAYERS = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3)}

default_cfgs = generate_default_cfgs({
    f"san_resnet{depth}": cfg("Exploring Self-attention for Image Recognition (CVPR 2020)",
                              "https://github.com/hszhao/SAN", "mit")
    for depth in SAN_RESNET_LAYERS})


def _san_resnet(depth: int, pretrained, kwargs):
    return build(AttnResNet, f"san_resnet{depth}", pretrained, kwargs, depth=50,
                 layers=SAN_RESNET_LAYERS[depth], attn=None)


@register
def san_resnet26(pretrained=False, **kwargs):
    """ResNet-26 of the SAN table: bottleneck ResNet with (1, 2, 4, 1) blocks (13.7M parameters)."""
    return _san_resnet(26, pretrained, kwargs)


@register
def san_resnet38(pretrained=False, **kwargs):
    """ResNet-38 of the SAN table: bottleneck ResNet with (2, 3, 5, 2) blocks (19.6M parameters)."""
    return _san_resnet(38, pretrained, kwargs)


@register
def san_resnet50(pretrained=False, **kwargs):
    """ResNet-50 of the SAN table: bottleneck ResNet with (3, 4, 6, 3) blocks (25.6M parameters)."""
    return _san_resnet(50, pretrained, kwargs)

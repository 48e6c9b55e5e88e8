"""SAN10/15/19, pairwise and patchwise (Zhao, Jia, Koltun, CVPR 2020), as hszhao/SAN builds them.

Faithful to the official `model/san.py`: a 1x1 stem of 64 channels, then five stages, each
`maxpool 2x2 -> conv1x1 -> SAN bottlenecks -> BN -> ReLU` at widths 64, 256, 512, 1024, 2048,
bottleneck rel/mid planes = width/16 and width/4, share_planes 8, kernels 3, 7, 7, 7, 7, average
pooling and a linear classifier; same submodule names, so official state dicts load after
`attnzoo convert --from san-official` (a key check, the names are kept). Input (N, 3, H, W) with H,
W divisible by 32 (224 px: the last feature map is 7x7, the minimum for kernel 7 is 4x4).

Parameters at 1000 classes: san10_pairwise 10.5M, san10_patchwise 11.8M, san15_pairwise 14.1M,
san15_patchwise 16.2M, san19_pairwise 17.6M, san19_patchwise 20.5M (the seed's table).

Features (`features_only`, `forward_intermediates`): the five stages, at strides 2, 4, 8, 16, 32
(the 1x1 stem at full resolution is not a stage).
"""
from __future__ import annotations

import torch
from timm.models import generate_default_cfgs
from torch import nn

from ..errors import UserError
from ..layers._checks import check_min_size
from ..layers.san import SANBottleneck, sa_type_name
from ._base import AttnzooNet
from ._registry import build, cfg, register

SAN_LAYERS = {10: (2, 1, 2, 4, 1), 15: (3, 2, 3, 5, 2), 19: (3, 3, 4, 6, 3)}
SAN_KERNELS = (3, 7, 7, 7, 7)


default_cfgs = generate_default_cfgs({
    f"san{depth}_{kind}": cfg("Exploring Self-attention for Image Recognition (CVPR 2020)",
                              "https://github.com/hszhao/SAN", "mit", first_conv="conv_in",
                              # the last stage's 7x7 reflection padding (3) needs a 4x4 map: 128 / 32
                              min_input_size=(3, 128, 128))
    for depth in SAN_LAYERS for kind in ("pairwise", "patchwise")})


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=False)


class SAN(AttnzooNet):
    """Self-attention network. (N, in_chans, H, W) -> logits (N, num_classes).

    forward_features: -> (N, 2048, H/32, W/32); forward_head: -> (N, num_classes), or the pooled
    (N, 2048) with pre_logits=True.
    """

    def __init__(self, sa_type="pairwise", layers=SAN_LAYERS[10], kernels=SAN_KERNELS, num_classes: int = 1000,
                 in_chans: int = 3, share_planes: int = 8, backend: str = "auto", drop_rate: float = 0.0,
                 global_pool: str = "avg"):
        super().__init__()
        self.sa_type = sa_type_name(sa_type)
        layers, kernels = tuple(layers), tuple(kernels)
        if len(layers) != 5 or len(kernels) != 5 or min(layers) < 1 or min(kernels) < 1:
            raise UserError(f"SAN: layers and kernels need 5 positive entries, one per stage; "
                            f"got layers={layers}, kernels={kernels}")
        c = 64
        self.conv_in, self.bn_in = _conv1x1(in_chans, c), nn.BatchNorm2d(c)
        widths = [c, 4 * c, 8 * c, 16 * c, 32 * c]
        prev = c
        for i, (width, n, k) in enumerate(zip(widths, layers, kernels, strict=True)):
            setattr(self, f"conv{i}", _conv1x1(prev, width))
            setattr(self, f"bn{i}", nn.BatchNorm2d(width))
            blocks = [SANBottleneck(self.sa_type, width, width // 16, width // 4, width, share_planes, k,
                                    1, backend=backend) for _ in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            setattr(self, f"relu{i}", nn.ReLU(inplace=True))  # one per stage: its output is the feature
            prev = width
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        # each stage's reflection padding (k - 1) // 2 needs a larger map at its stride: the least input side
        self.min_size = max(2 ** (i + 1) * ((k - 1) // 2 + 1) for i, k in enumerate(kernels))
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"relu{i}") for i, w in enumerate(widths)]
        self.stage_modules = [(f"conv{i}", f"bn{i}", f"layer{i}", f"relu{i}") for i in range(5)]
        self._init_head(prev, num_classes, global_pool, drop_rate)

    def _stage(self, i: int):
        conv, bn, layer, relu = (getattr(self, f"{m}{i}") for m in ("conv", "bn", "layer", "relu"))

        def stage(x):  # (N, C, H, W) -> (N, width, H/2, W/2)
            if i == 0:
                x = self.relu(self.bn_in(self.conv_in(check_min_size("SAN", x, self.min_size))))
            return relu(bn(layer(conv(self.pool(x)))))
        return stage

    def _stages(self):
        return [self._stage(i) for i in range(5)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, 2048, H/32, W/32)."""
        if (self.grad_checkpointing or self.pruned) and not torch.jit.is_scripting():
            return self.forward_intermediates(x, indices=1)[0]  # checkpointed or pruned: stage by stage
        # written out for TorchScript, which cannot look the official top-level names up by index
        x = check_min_size("SAN", x, self.min_size)
        x = self.relu(self.bn_in(self.conv_in(x)))                          # (N, 64, H, W)
        x = self.relu0(self.bn0(self.layer0(self.conv0(self.pool(x)))))     # (N, 64, H/2, W/2)
        x = self.relu1(self.bn1(self.layer1(self.conv1(self.pool(x)))))     # (N, 256, H/4, W/4)
        x = self.relu2(self.bn2(self.layer2(self.conv2(self.pool(x)))))     # (N, 512, H/8, W/8)
        x = self.relu3(self.bn3(self.layer3(self.conv3(self.pool(x)))))     # (N, 1024, H/16, W/16)
        return self.relu4(self.bn4(self.layer4(self.conv4(self.pool(x)))))  # (N, 2048, H/32, W/32)


def _san(name: str, depth: int, sa_type: str, pretrained, kwargs):
    return build(SAN, name, pretrained, kwargs, sa_type=sa_type, layers=SAN_LAYERS[depth], kernels=SAN_KERNELS)


@register
def san10_pairwise(pretrained=False, **kwargs):
    """SAN10, pairwise attention (10.5M parameters at 1000 classes)."""
    return _san("san10_pairwise", 10, "pairwise", pretrained, kwargs)


@register
def san10_patchwise(pretrained=False, **kwargs):
    """SAN10, patchwise attention (11.8M parameters at 1000 classes)."""
    return _san("san10_patchwise", 10, "patchwise", pretrained, kwargs)


@register
def san15_pairwise(pretrained=False, **kwargs):
    """SAN15, pairwise attention (14.1M parameters at 1000 classes)."""
    return _san("san15_pairwise", 15, "pairwise", pretrained, kwargs)


@register
def san15_patchwise(pretrained=False, **kwargs):
    """SAN15, patchwise attention (16.2M parameters at 1000 classes)."""
    return _san("san15_patchwise", 15, "patchwise", pretrained, kwargs)


@register
def san19_pairwise(pretrained=False, **kwargs):
    """SAN19, pairwise attention (17.6M parameters at 1000 classes)."""
    return _san("san19_pairwise", 19, "pairwise", pretrained, kwargs)


@register
def san19_patchwise(pretrained=False, **kwargs):
    """SAN19, patchwise attention (20.5M parameters at 1000 classes)."""
    return _san("san19_patchwise", 19, "patchwise", pretrained, kwargs)

"""SAN10/15/19, pairwise and patchwise (Zhao, Jia, Koltun, CVPR 2020), as hszhao/SAN builds them.

Faithful to the official `model/san.py`: a 1x1 stem of 64 channels, then five stages, each
`maxpool 2x2 -> conv1x1 -> SAN bottlenecks -> BN -> ReLU` at widths 64, 256, 512, 1024, 2048,
bottleneck rel/mid planes = width/16 and width/4, share_planes 8, kernels 3, 7, 7, 7, 7, average
pooling and a linear classifier; same submodule names, so official state dicts load after
`attnzoo convert --from san-official` (a key check, the names are kept). Input (N, 3, H, W) with H,
W divisible by 32 (224 px: the last feature map is 7x7, the minimum for kernel 7 is 4x4).

Parameters at 1000 classes: san10_pairwise 10.5M, san10_patchwise 11.8M, san15_pairwise 14.1M,
san15_patchwise 16.2M, san19_pairwise 17.6M, san19_patchwise 20.5M (the seed's table).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..layers.san import SANBottleneck, sa_type_name
from ._registry import build, register

SAN_LAYERS = {10: (2, 1, 2, 4, 1), 15: (3, 2, 3, 5, 2), 19: (3, 3, 4, 6, 3)}
SAN_KERNELS = (3, 7, 7, 7, 7)


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=False)


class SAN(nn.Module):
    """Self-attention network. (N, in_chans, H, W) -> logits (N, num_classes).

    forward_features: -> (N, 2048, H/32, W/32); forward_head: -> (N, num_classes), or the pooled
    (N, 2048) with pre_logits=True.
    """

    def __init__(self, sa_type="pairwise", layers=SAN_LAYERS[10], kernels=SAN_KERNELS, num_classes: int = 1000,
                 in_chans: int = 3, share_planes: int = 8, backend: str = "auto", drop_rate: float = 0.0):
        super().__init__()
        self.sa_type = sa_type_name(sa_type)
        layers, kernels = tuple(layers), tuple(kernels)
        if len(layers) != 5 or len(kernels) != 5 or min(layers) < 1 or min(kernels) < 1:
            raise UserError(f"SAN: layers and kernels need 5 positive entries, one per stage; "
                            f"got layers={layers}, kernels={kernels}")
        self.num_classes, self.drop_rate = num_classes, drop_rate
        c = 64
        self.conv_in, self.bn_in = _conv1x1(in_chans, c), nn.BatchNorm2d(c)
        widths = [c, 4 * c, 8 * c, 16 * c, 32 * c]
        prev = c
        for i, (width, n, k) in enumerate(zip(widths, layers, kernels)):
            setattr(self, f"conv{i}", _conv1x1(prev, width))
            setattr(self, f"bn{i}", nn.BatchNorm2d(width))
            blocks = [SANBottleneck(self.sa_type, width, width // 16, width // 4, width, share_planes, k,
                                    1, backend=backend) for _ in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            prev = width
        self.num_features = prev
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(prev, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool=None):
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_in(self.conv_in(x)))                          # (N, 64, H, W)
        for i in range(5):                                                  # H/2, H/4, ..., H/32
            conv, bn, layer = getattr(self, f"conv{i}"), getattr(self, f"bn{i}"), getattr(self, f"layer{i}")
            x = self.relu(bn(layer(conv(self.pool(x)))))
        return x                                                            # (N, 2048, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)                               # (N, 2048)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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

"""SENet and LSAS-SENet for CIFAR / STL-10, as the LSAS seed builds them (`cifar/senet.py`,
`cifar/lsas_senet.py`), on attnzoo's `CifarResNet` (bearpaw's layout).

- `senet_cifar`: SE (`attnzoo.layers.SE`, hidden round(C/16), Linear layers with bias) after the
  last BatchNorm of every block of all three stages, before the residual addition.
- `lsas_senet_cifar`: SE + LSAS sub-attention of order `order` (default 1, the seed's default
  `--info normal`) only in the blocks of the third stage; stages 1 and 2 have no attention at
  all. `order=0` is SE in the third stage only (the seed's `--info s0`).
- `*_allstages_cifar`: LSAS-SE in every stage, so that LSAS can also be compared with
  `senet_cifar` position for position.

Depth is 9n+2 with the bottleneck block (the seed's networks, e.g. 164) or 6n+2 with the basic
block. The seed's own code cannot build the basic block (its BasicBlock takes no `info`); here
the basic block gets the same attention slot, which is attnzoo's extension.

Input (N, 3, H, W) -> logits (N, num_classes); any H, W (pooling is global, STL-10 runs at 96).
"""
from timm.models import generate_default_cfgs

from ._registry import register
from .resnet_cifar import build_cifar_resnet, resnet_cifar_cfg

ALL_STAGES = (1, 2, 3)
LSAS_PAPER = "LSAS: Lightweight Sub-attention Strategy for Alleviating Attention Bias Problem (ICME 2023)"
LSAS_REPO = "https://github.com/Qrange-group/LSAS"

default_cfgs = generate_default_cfgs({
    name: resnet_cifar_cfg(LSAS_PAPER, LSAS_REPO) for name in
    ("senet_cifar", "lsas_senet_cifar", "lsas_senet_allstages_cifar", "senet164_cifar",
     "lsas_senet164_cifar", "lsas_senet164_allstages_cifar")})


def _senet(name, pretrained, kwargs, **defaults):
    return build_cifar_resnet(name, pretrained, kwargs, attn="se", attn_stages=ALL_STAGES, **defaults)


def _lsas(name, pretrained, kwargs, stages=(3,), **defaults):
    """LSAS-SE in `stages`; `order` (0-5) and the SE options go into attn_kwargs."""
    order = kwargs.pop("order", 1)
    attn_kwargs = kwargs.pop("attn_kwargs", None) or {}
    if str(kwargs.get("attn", "lsas_se")).startswith("lsas_"):
        attn_kwargs = {"order": order, **attn_kwargs}
    return build_cifar_resnet(name, pretrained, kwargs, attn="lsas_se", attn_kwargs=attn_kwargs,
                              attn_stages=stages, **defaults)


@register
def senet_cifar(pretrained=False, **kwargs):
    """SE-ResNet for CIFAR of any depth: `depth=` (default 164), `block=` bottleneck | basic."""
    kwargs.setdefault("depth", 164)
    kwargs.setdefault("block", "bottleneck")
    return _senet("senet_cifar", pretrained, kwargs)


@register
def lsas_senet_cifar(pretrained=False, **kwargs):
    """LSAS-SE-ResNet for CIFAR of any depth (attention in stage 3 only, as in the seed);
    `depth=` (default 164), `block=`, `order=` 0-5 (default 1)."""
    kwargs.setdefault("depth", 164)
    kwargs.setdefault("block", "bottleneck")
    return _lsas("lsas_senet_cifar", pretrained, kwargs)


@register
def lsas_senet_allstages_cifar(pretrained=False, **kwargs):
    """LSAS-SE-ResNet for CIFAR of any depth with LSAS-SE in every stage (attnzoo's variant)."""
    kwargs.setdefault("depth", 164)
    kwargs.setdefault("block", "bottleneck")
    return _lsas("lsas_senet_allstages_cifar", pretrained, kwargs, stages=ALL_STAGES)


@register
def senet164_cifar(pretrained=False, **kwargs):
    """ResNet-164 (bottleneck) with SE in every block: the seed's SENet row (1.91M params at 10 classes)."""
    return _senet("senet164_cifar", pretrained, kwargs, depth=164, block="bottleneck")


@register
def lsas_senet164_cifar(pretrained=False, **kwargs):
    """ResNet-164 with SE + LSAS (order 1) in the third stage: the seed's LSAS-SENet row."""
    return _lsas("lsas_senet164_cifar", pretrained, kwargs, depth=164, block="bottleneck")


@register
def lsas_senet164_allstages_cifar(pretrained=False, **kwargs):
    """ResNet-164 with SE + LSAS (order 1) in every block: compare with `senet164_cifar`."""
    return _lsas("lsas_senet164_allstages_cifar", pretrained, kwargs, stages=ALL_STAGES,
                 depth=164, block="bottleneck")

"""Networks built from attnzoo layers; importing this package registers all of them in timm."""
from . import (  # noqa: F401  (each module registers its networks)
    ida,
    lesa,
    resnet_cifar,
    san,
    san_resnet,
    senet_cifar,
    senet_imagenet,
    vgg_cifar,
)
from ._registry import ATTNZOO_MODELS, register

__all__ = ["ATTNZOO_MODELS", "register"]

"""Networks built from attnzoo layers; importing this package registers all of them in timm."""
from . import resnet_cifar  # noqa: F401  (registers the CIFAR ResNets)
from ._registry import ATTNZOO_MODELS, register

__all__ = ["ATTNZOO_MODELS", "register"]

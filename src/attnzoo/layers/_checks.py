"""The argument checks every block makes, so a wrong channel count or input shape is one UserError
naming what is expected instead of a torch internals message."""
import torch
from timm.layers import register_notrace_function

from ..errors import UserError


def check_channels(block: str, **channels) -> None:
    """Each keyword (in_planes=64, ...) must be a positive integer."""
    for name, value in channels.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{block}: {name} must be a positive integer, got {value!r}")


@register_notrace_function  # a data-dependent check: a leaf when FX traces a block
def check_input(block: str, x: torch.Tensor, channels: int) -> torch.Tensor:
    """x, unless it is not a feature map (N, channels, H, W) (UserError). Returning x keeps the
    check in traced graphs, whose dead-code elimination drops calls whose result is unused."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise UserError(f"{block} expects a feature map (N, {channels}, H, W), got shape {list(x.shape)}")
    return x

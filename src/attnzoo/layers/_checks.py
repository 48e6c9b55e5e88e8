"""The argument checks every block makes, so a wrong channel count or input shape is one UserError
naming what is expected instead of a torch internals message."""
import torch
import torch.fx

from ..errors import UserError


def check_channels(block: str, **channels) -> None:
    """Each keyword (in_planes=64, ...) must be a positive integer."""
    for name, value in channels.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{block}: {name} must be a positive integer, got {value!r}")


def feature_map(block: str, x: torch.Tensor, channels: int) -> torch.Tensor:
    """x, unless it is not a feature map (N, channels, H, W) (UserError)."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise UserError(f"{block} expects a feature map (N, {channels}, H, W), got shape {list(x.shape)}")
    return x


def check_input(block: str, x: torch.Tensor, channels: int) -> torch.Tensor:
    """`feature_map(block, x, channels)`, in a form that TorchScript compiles and that every torch.fx
    tracer keeps (see `_checked_or_recorded`). Returning x keeps the call in traced graphs, whose
    dead-code elimination drops calls whose result is unused."""
    if torch.jit.is_scripting():
        return feature_map(block, x, channels)
    return _checked_or_recorded(block, x, channels)


@torch.jit.unused  # TorchScript takes the branch above; this one uses torch.fx
def _checked_or_recorded(block: str, x: torch.Tensor, channels: int) -> torch.Tensor:
    """The check, or under any torch.fx tracer (torchvision's feature extraction, timm's FX
    features, torch.fx.symbolic_trace) a call to it recorded in the graph instead of traced into:
    the check depends on the data's shape. The traced graph keeps it and scripts (it calls
    `feature_map`)."""
    if isinstance(x, torch.fx.Proxy):
        return x.tracer.create_proxy("call_function", feature_map, (block, x, channels), {})
    return feature_map(block, x, channels)

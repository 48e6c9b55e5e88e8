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


def min_size(what: str, x: torch.Tensor, least: int) -> torch.Tensor:
    """x, unless its height or width is below `least` (UserError)."""
    if x.shape[-2] < least or x.shape[-1] < least:
        raise UserError(f"{what} needs inputs of at least {least}x{least} pixels, "
                        f"got {x.shape[-2]}x{x.shape[-1]}")
    return x


# Each check is called as below: TorchScript compiles the eager check; under any torch.fx tracer
# (torchvision's feature extraction, timm's FX features, torch.fx.symbolic_trace) the check, which
# depends on the data's shape, is recorded in the graph as one call instead of being traced into,
# so the traced graph keeps it (and scripts). Returning x keeps the call in traced graphs, whose
# dead-code elimination drops calls whose result is unused.

def check_input(block: str, x: torch.Tensor, channels: int) -> torch.Tensor:
    """`feature_map(block, x, channels)`, for eager, TorchScript and torch.fx."""
    if torch.jit.is_scripting():
        return feature_map(block, x, channels)
    return _traced_feature_map(block, x, channels)


def check_min_size(what: str, x: torch.Tensor, least: int) -> torch.Tensor:
    """`min_size(what, x, least)`, for eager, TorchScript and torch.fx."""
    if torch.jit.is_scripting():
        return min_size(what, x, least)
    return _traced_min_size(what, x, least)


def _checked_or_recorded(check, *args):
    """check(*args), or the call recorded in the graph when its tensor (args[1]) is an FX proxy."""
    if isinstance(args[1], torch.fx.Proxy):
        return args[1].tracer.create_proxy("call_function", check, args, {})
    return check(*args)


@torch.jit.unused  # TorchScript takes the eager branch
def _traced_feature_map(block: str, x: torch.Tensor, channels: int) -> torch.Tensor:
    return _checked_or_recorded(feature_map, block, x, channels)


@torch.jit.unused
def _traced_min_size(what: str, x: torch.Tensor, least: int) -> torch.Tensor:
    return _checked_or_recorded(min_size, what, x, least)

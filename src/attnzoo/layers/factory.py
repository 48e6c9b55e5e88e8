"""Name -> attention block, so every attnzoo backbone takes `attn=<name>` and `attn_kwargs`, and
`get_attn(name, **kwargs)` gives timm's networks the same blocks as `attn_layer` / `se_layer`.

attnzoo's own blocks come first (channel attention: `se` the LSAS seed's SE; `lsas_se`,
`lsas_eca`, `lsas_cbam` LSAS sub-attention of `order` 0-5 on SE / ECA / CBAM's channel gate;
`sb` Shift-and-Balance; `se_bn` the SB seed's SE with BatchNorm; `lesa` LESA with C -> C
channels, which needs `fmap_size`, the side of the feature map it sees); the names of
`TIMM_BLOCKS` are handed to `timm.layers.get_attn` (eca, cbam, gc, ...). A block is built as
`Block(channels, **attn_kwargs)` and maps (N, C, H, W) -> (N, C, H, W).
"""
from functools import partial

import timm.layers
from torch import nn

from ..errors import UserError, choices_hint
from ._checks import check_channels
from .lesa import lesa_block
from .lsas import LSAS
from .se import SE
from .shift_balance import BNSqueezeExcite, ShiftBalance

# attnzoo blocks: name -> callable(channels, **kwargs) -> nn.Module
ATTNZOO_BLOCKS: dict = {
    "se": SE,
    "lsas_se": partial(LSAS, attn="se"),
    "lsas_eca": partial(LSAS, attn="eca"),
    "lsas_cbam": partial(LSAS, attn="cbam"),
    "sb": ShiftBalance,
    "se_bn": BNSqueezeExcite,
    "lesa": lesa_block,
}

TIMM_BLOCKS = ("ese", "eca", "ecam", "ceca", "ge", "gc", "gca", "cbam", "lcbam", "coord", "scoord")


def block_names() -> list[str]:
    return sorted(set(ATTNZOO_BLOCKS) | set(TIMM_BLOCKS))


def get_block(name):
    """The constructor behind `name`, or None for no attention ('', 'none' or None)."""
    if name is None or name in ("", "none"):
        return None
    if not isinstance(name, str):
        return name  # a class or partial passed directly
    if name in ATTNZOO_BLOCKS:
        return ATTNZOO_BLOCKS[name]
    if name in TIMM_BLOCKS:
        return timm.layers.get_attn(name)
    raise UserError(f"unknown attention block '{name}'; {choices_hint(name, block_names())}")


def create_block(name, channels: int, **kwargs) -> nn.Module | None:
    """Build the block `name` for `channels` channels; None when name means no attention."""
    cls = get_block(name)
    if cls is None:
        return None
    check_channels(f"attention block '{name}'", channels=channels)
    try:
        return cls(channels, **kwargs)
    except TypeError as e:
        raise UserError(f"attention block '{name}': {e}") from None


def _placed_block(name, kwargs: dict, channels: int, device=None, dtype=None) -> nn.Module:
    """`create_block`, then moved to `device` / `dtype`, which timm's blocks pass to attn_layer."""
    block = create_block(name, channels, **kwargs)
    return block.to(device=device, dtype=dtype) if device is not None or dtype is not None else block


def get_attn(name, **kwargs):
    """A `channels -> nn.Module` callable building the block `name` with `kwargs` (None for no
    attention), for any network that takes one: attnzoo's `attn=`, timm's `attn_layer=` /
    `se_layer=`, `add_attention`. The name is checked now, the options when a block is built."""
    return None if get_block(name) is None else partial(_placed_block, name, kwargs)

"""Name -> attention block, so every attnzoo backbone takes `attn=<name>` and `attn_kwargs`, and
`get_attn(name, **kwargs)` gives timm's networks the same blocks as `attn_layer` / `se_layer`.

attnzoo's own blocks come first (channel attention: `se` the LSAS seed's SE; `lsas_se`,
`lsas_eca`, `lsas_cbam` LSAS sub-attention of `order` 0-5 on SE / ECA / CBAM's channel gate;
`sb` Shift-and-Balance; `se_bn` the SB seed's SE with BatchNorm; `lesa` LESA with C -> C
channels, which needs `fmap_size`, the side of the feature map it sees; `ge` timm's
Gather-Excite, see `gather_excite`); the names of `TIMM_BLOCKS` are handed to
`timm.layers.get_attn` (eca, cbam, gc, ...). A block is built as `Block(channels, **attn_kwargs)`
and maps (N, C, H, W) -> (N, C, H, W). Its options are checked first, by name and value, whatever
route gives them (`check_options`, rules in `options.py`).
"""
from functools import partial

import timm.layers
import torch.fx
from timm.layers import ConvMlp, GatherExcite, get_act_layer, make_divisible
from torch import nn

from ..errors import UserError, choices_hint
from ._checks import check_channels
from .lesa import LESA, lesa_block
from .lsas import BASES, LSAS
from .options import check_block_options
from .se import SE
from .shift_balance import BNSqueezeExcite, ShiftBalance


class GatherExciteBlock(GatherExcite):
    """timm's `GatherExcite`, which any torch.fx tracer (torchvision's feature extraction, timm's)
    records as one call of the module: its forward compares the gathered map's size with 1, which a
    symbolic trace cannot do. The traced graph calls the module, which runs timm's forward (when
    the block itself is the traced root, there is no module to call, and it is traced into)."""

    def forward(self, x):
        path = x.tracer.path_of_module(self) if isinstance(x, torch.fx.Proxy) else ""
        if path:  # traced: one node, (N, C, H, W) -> same
            return x.tracer.create_proxy("call_module", path, (x,), {})
        return super().forward(x)


def gather_excite(channels: int, use_mlp: bool = True, rd_ratio: float = 1. / 16,
                  rd_channels: int | None = None, rd_divisor: int = 1, act_layer=nn.ReLU,
                  extra_params: bool = False, **kwargs) -> GatherExcite:
    """timm's `GatherExcite` (parameter-free gather), with its MLP built here: timm 1.0.31's
    constructor passes its device/dtype dict to `ConvMlp` as positional arguments (`*dd`), which
    fails ("got multiple values for argument 'act_layer'"); so it is built without the MLP and then
    given the `ConvMlp` it would have made. `extra_params=True` (gather convolutions) has the same
    fault in its convolutions and norms, and is refused. A torch.fx graph calls it whole
    (`GatherExciteBlock`)."""
    if extra_params:
        raise UserError("attention block 'ge': extra_params=True is not supported (timm's GatherExcite "
                        "cannot build its gather convolutions); valid: extra_params=False")
    block = GatherExciteBlock(channels, use_mlp=False, act_layer=act_layer, **kwargs)
    if use_mlp:
        rd_channels = rd_channels or make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.)
        block.mlp = ConvMlp(channels, rd_channels, act_layer=get_act_layer(act_layer))  # (N, C, 1, 1) -> same
    return block


# attnzoo blocks: name -> callable(channels, **kwargs) -> nn.Module
ATTNZOO_BLOCKS: dict = {
    "se": SE,
    "lsas_se": partial(LSAS, attn="se"),
    "lsas_eca": partial(LSAS, attn="eca"),
    "lsas_cbam": partial(LSAS, attn="cbam"),
    "sb": ShiftBalance,
    "se_bn": BNSqueezeExcite,
    "lesa": lesa_block,
    "ge": gather_excite,
}

# where a block's constructor hands its **kwargs on: their options are the block's options too
PASSED_ON = {**{f"lsas_{attn}": base for attn, base in BASES.items()}, "lesa": LESA, "ge": GatherExcite}

TIMM_BLOCKS = ("ese", "eca", "ecam", "ceca", "gc", "gca", "cbam", "lcbam", "coord", "scoord")


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


def check_options(name, options: dict) -> None:
    """UserError naming the block, the option and what is valid, unless every item of `options`
    is an option the block `name` takes, with a valid value (a block given as a callable, not
    a name, is left to its constructor)."""
    cls = get_block(name)
    if isinstance(name, str) and cls is not None:
        check_block_options(name, cls, options, PASSED_ON.get(name))


def create_block(name, channels: int, **kwargs) -> nn.Module | None:
    """Build the block `name` for `channels` channels; None when name means no attention."""
    cls = get_block(name)
    if cls is None:
        return None
    check_options(name, kwargs)
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
    `se_layer=`, `add_attention`. The name and the options are checked now (UserError), the
    channel count when a block is built."""
    if get_block(name) is None:
        if kwargs:  # options that no block would take: refused, not silently dropped
            raise UserError(f"attention block options {', '.join(map(str, kwargs))} are given but no block "
                            f"(attn={name!r}); name one: {', '.join(block_names())}")
        return None
    check_options(name, kwargs)
    return partial(_placed_block, name, kwargs)

"""A network as a config's `model` section describes it: the network `model.name` names, with the
block `model.attn` inserted by `add_attention` (where `model.attn_stages` says, with the options of
`model.attn_kwargs`). A 'host+block' name is the same thing written in one word:
`resnet18+sb` with `model.attn_kwargs` is `resnet18` with `model.attn=sb` and those options.

`m` is any object with the `ModelConfig` fields (name, attn, attn_kwargs, attn_stages,
attn_position); the models package does not import the engine's config.
"""
from __future__ import annotations

from torch import nn

from ..layers.factory import get_block
from .surgery import add_attention, split_model_name


def inserted_block(m) -> str | None:
    """The block inserted into the host, from the 'host+block' name or `model.attn`; None if none."""
    _, block = split_model_name(m.name)
    block = block or m.attn
    return block if get_block(block) is not None else None


def create_configured_model(m, **kwargs) -> nn.Module:
    """The host `m.name` names, built with `kwargs` (num_classes, pretrained, ...), with the block
    of `inserted_block(m)` put in (host weights, pretrained ones included, are kept)."""
    from .. import create_model  # the package's entry point, which imports this package

    host, _ = split_model_name(m.name)
    model = create_model(host, **kwargs)
    block = inserted_block(m)
    if block is None:
        return model
    return add_attention(model, block, stages=m.attn_stages, position=m.attn_position,
                         **m.attn_kwargs)[0]


def model_label(m) -> str:
    """'resnet18 + lsas_se' for a host with an inserted block, else the name."""
    host, _ = split_model_name(m.name)
    block = inserted_block(m)
    return f"{host} + {block}" if block else m.name

"""A network as a config's `model` section describes it: the network `model.name` names, with the
block `model.attn` inserted by `add_attention` (where `model.attn_stages` says, with the options of
`model.attn_kwargs`). A 'host+block' name is the same thing written in one word:
`resnet18+sb` with `model.attn_kwargs` is `resnet18` with `model.attn=sb` and those options.

`m` is any object with the `ModelConfig` fields (name, attn, attn_kwargs, attn_stages,
attn_position); the models package does not import the engine's config. Beside the builder:
`model_label` ('resnet18 + lsas_se'), `describe_pretrained` (what a `model.pretrained` file gave)
and `with_input_size` (an input size given once builds a network made for one size).
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


def with_input_size(name: str, img_size: int | None, kwargs: dict) -> dict:
    """`kwargs` with `img_size` added when the network `name` is built for one input size (timm's
    `fixed_input_size`: LESA networks, ViTs) and `kwargs` names none, so that an input size given
    once (`attnzoo info --img-size`) builds it for that size."""
    from timm.models import get_pretrained_cfg

    host, _ = split_model_name(name)
    cfg = get_pretrained_cfg(host, allow_unregistered=True)
    if img_size is None or "img_size" in kwargs or not getattr(cfg, "fixed_input_size", False):
        return kwargs
    return {**kwargs, "img_size": img_size}


def model_label(m) -> str:
    """'resnet18 + lsas_se' for a host with an inserted block, else the name."""
    host, _ = split_model_name(m.name)
    block = inserted_block(m)
    return f"{host} + {block}" if block else m.name


def describe_pretrained(model: nn.Module, path) -> str:
    """One line: how many of `model`'s tensors the pretrained file `path` gave, and which modules
    start from their initialisation instead (a replaced classifier, inserted blocks). A tensor
    counts as loaded when the file holds one of its shape under its name, or under its name
    without the first part (a backbone's file)."""
    from ..weights import read_state_dict

    shapes = {k: tuple(v.shape) for k, v in read_state_dict(path, "model.pretrained").items()}
    own = model.state_dict()
    new = [k for k, v in own.items()
           if not any(shapes.get(name) == tuple(v.shape) for name in (k, k.partition(".")[2]))]
    if not new:
        return f"pretrained {path}: all {len(own)} tensors loaded (strict)"
    loaded_paths = {p for k in own.keys() - set(new) for p in _prefixes(k)}
    groups: dict[str, list] = {}  # attribute name of a wholly new module -> [modules, tensors]
    for key in new:
        top = next(p for p in _prefixes(key) + [key] if p not in loaded_paths)
        count = groups.setdefault(top.rpartition(".")[2], [set(), 0])
        count[0].add(top)
        count[1] += 1
    shown = ", ".join(f"{len(mods)} x {name}" if len(mods) > 1 else next(iter(mods))
                      for name, (mods, _) in groups.items())
    return (f"pretrained {path}: {len(own) - len(new)} of {len(own)} tensors loaded; "
            f"new: {shown} ({len(new)} tensors)")


def _prefixes(key: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b']: the modules that hold the tensor `key`, outermost first."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]

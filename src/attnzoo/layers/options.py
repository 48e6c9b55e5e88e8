"""The options of an attention block, checked before it is built: each must be one its constructor
takes, of the type its signature gives and inside the range `RULES` gives its name (the names are
timm's vocabulary, the same for every block that has them). A wrong one is one `UserError` line
naming the block, the option, the value and what is valid, instead of what the constructor's
arithmetic happens to raise ("'>' not supported between 'str' and 'int'").
"""
from __future__ import annotations

import inspect
import math
import types
import typing
from functools import partial

from timm.layers import get_act_layer

from ..errors import UserError, choices_hint


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _activation(v) -> bool:
    """A layer class, or a name timm's `get_act_layer` knows."""
    if not isinstance(v, str):
        return callable(v)
    try:
        return get_act_layer(v) is not None
    except KeyError:
        return False


def _size(v) -> bool:
    """A positive integer, or an (H, W) pair of them."""
    pair = v if isinstance(v, (list, tuple)) and len(v) == 2 else [v]
    return all(_integer(n) and n > 0 for n in pair)


# option name -> (test of a value, what is valid in words), where the name means the same in
# every block that has it (timm's vocabulary); null is taken too where the option's default is null
ACTIVATIONS = ("an activation name timm knows (relu, silu, gelu, sigmoid, hard_sigmoid, tanh, ...) "
               "or a layer class")
RULES = {
    "rd_ratio": (lambda v: _number(v) and v > 0, "a positive number"),
    "rd_channels": (lambda v: _integer(v) and v > 0, "a positive integer (or null: from rd_ratio)"),
    "rd_divisor": (lambda v: _integer(v) and v > 0, "a positive integer"),
    "reduction": (lambda v: _number(v) and v > 0, "a positive number"),  # deprecated: 1 / rd_ratio
    "ratio": (lambda v: _number(v) and v > 0, "a positive number"),  # deprecated: rd_ratio
    "kernel_size": (lambda v: _integer(v) and v > 0 and v % 2, "a positive odd integer"),
    "spatial_kernel_size": (lambda v: _integer(v) and v > 0 and v % 2, "a positive odd integer"),
    "se_factor": (lambda v: _number(v) and v > 0, "a positive number"),
    "init_std": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "groups": (lambda v: _integer(v) and v > 0, "a positive integer"),
    "stride": (lambda v: _integer(v) and v > 0, "a positive integer"),
    "extent": (lambda v: _integer(v) and v >= 0 and v % 2 == 0, "0 (global) or an even positive integer"),
    "fmap_size": (_size, "a positive integer or a pair of them (the feature map's side)"),
    "act_layer": (_activation, ACTIVATIONS),
    "gate_layer": (_activation, ACTIVATIONS),
}
# for the other options, the type of the signature's annotation (or default)
TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
NOT_OPTIONS = {"channels", "in_planes", "out_planes", "device", "dtype"}  # given by the network


def block_options(make, passed_on=None) -> dict[str, inspect.Parameter]:
    """The options `make(channels, **options)` takes; `passed_on` is the constructor its
    `**kwargs` go to (LSAS's base gate, LESA), whose options count too."""
    fixed = set(make.keywords) if isinstance(make, partial) else set()  # e.g. LSAS's attn='se'
    params = {}
    for fn in (passed_on, make):  # the outer constructor's parameter wins where both have one
        if fn is None:
            continue
        for p in _signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in NOT_OPTIONS | fixed:
                params[p.name] = p
    return params


def check_block_options(block: str, make, options: dict, passed_on=None) -> None:
    """UserError unless every item of `options` is an option of `make` with a valid value."""
    params = block_options(make, passed_on)
    for key, value in options.items():
        if key not in params:
            raise UserError(f"attention block '{block}': unknown option '{key}'; {choices_hint(key, params)}")
        valid = _invalid(key, value, params[key])
        if valid:
            raise UserError(f"attention block '{block}': option {key} must be {valid}, got {value!r}")


def _signature(fn) -> inspect.Signature:
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, TypeError):  # an annotation that does not evaluate: the plain signature
        return inspect.signature(fn)


def _invalid(key: str, value, param: inspect.Parameter) -> str | None:
    """What is valid for option `key`, or None when `value` is."""
    if value is None and param.default is None:
        return None
    if key in RULES:
        test, words = RULES[key]
        return None if test(value) else words
    tp, optional = _annotated_type(param)
    if tp is None or (value is None and optional):
        return None
    return None if _is(value, tp) else TYPE_WORDS[tp] + (" (or null)" if optional else "")


def _is(value, tp) -> bool:
    if tp is bool or tp is str:
        return isinstance(value, tp)
    return _integer(value) if tp is int else _number(value)


def _annotated_type(param: inspect.Parameter):
    """(bool, int, float or str; whether None is taken too) from the annotation, else the default;
    (None, _) when the option is of another kind (a layer class, a name or a class, ...)."""
    tp, optional = param.annotation, param.default is None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = optional or len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else None
    if tp is inspect.Parameter.empty:
        tp = type(param.default)
    return (tp if tp in TYPE_WORDS else None), optional

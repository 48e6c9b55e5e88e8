"""Plain data (YAML, `--set` values) -> a dataclass, every value checked against its annotation.

`build_dataclass(cls, data)` builds `cls` from a mapping: unknown keys are refused with the close
match and the valid keys named; `coerce` checks one value against its annotated type (Literal,
Optional, nested dataclasses, bool, int, float, str, typed lists and tuples, dict), accepting
true/false/yes/no/1/0 text for booleans and refusing non-finite floats. Every refusal is one
`UserError` line that starts with the key's dotted path.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

from ..errors import UserError


def coerce(path: str, value: Any, tp: Any) -> Any:
    """Coerce `value` to the annotated type `tp`, or raise UserError naming what is expected."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{path}: '{value}' is not valid; valid: {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return coerce(path, value, args[0])
        for option in args:  # e.g. int | Literal["auto"]: the first type that takes the value
            try:
                return coerce(path, value, option)
            except UserError:
                pass
        names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        valid = [", ".join(map(str, typing.get_args(a))) if typing.get_origin(a) is Literal
                 else names.get(a, str(a)) for a in args]
        raise UserError(f"{path}: {value!r} is not valid; valid: {' or '.join(valid)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
        return build_dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise UserError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{path}: expected a string, got {value!r}")
        return value
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(value) != len(args):
            raise UserError(f"{path}: expected a list of {len(args)} values, got {list(value)!r}")
        if args:  # list[int]: one type for all; tuple[float, float]: one per position
            types_ = args if origin is tuple else args * len(value)
            value = [coerce(f"{path}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, types_, strict=True))]
        return (origin or tp)(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def build_dataclass(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"unknown config key '{path}'; {hint}valid keys{' of ' + prefix if prefix else ''}: "
                            f"{', '.join(names)}")
        kwargs[key] = coerce(path, value, hints[key])
    return cls(**kwargs)

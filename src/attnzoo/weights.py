"""Reading and strictly loading state dicts from files, without executing pickled code.

Shared by checkpoints, `attnzoo convert` and backbone weights: a file is read with safetensors
or `torch.load(weights_only=True)`, the usual containers are unwrapped, DataParallel's `module.`
prefix is stripped, and a state dict that does not fit a model is refused with the missing,
unexpected and mis-shaped keys named.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import UserError

CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net", "state_dict_ema", "model_ema")


def read_state_dict(path, what: str = "checkpoint") -> dict:
    """{name: tensor} from a .safetensors or torch file; `what` names the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated file, foreign pickle, not a checkpoint
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise UserError(f"{what} {path} cannot be read safely as a state dict "
                        f"({type(e).__name__}: {first})") from None
    for key in CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{what} {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def state_mismatch(own: dict, state: dict) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, 'key shape vs shape' lines) of `state` against `own`."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    return missing, unexpected, shapes


def describe_mismatch(missing, unexpected, shapes, shown: int = 5) -> str:
    def head(keys):
        return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")
    parts = [f"missing keys: {head(missing)}" if missing else "",
             f"unexpected keys: {head(unexpected)}" if unexpected else "",
             f"shape mismatches: {head(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def load_state_strict(model: nn.Module, state: dict, source: str) -> None:
    """Load weights, refusing with the missing, unexpected and mis-shaped keys named."""
    mismatch = state_mismatch(model.state_dict(), state)
    if any(mismatch):
        raise UserError(f"{source} does not fit the model: {describe_mismatch(*mismatch)}")
    model.load_state_dict(state)

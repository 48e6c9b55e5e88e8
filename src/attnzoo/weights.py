"""Reading and strictly loading state dicts from files, without executing pickled code.

Shared by checkpoints, `attnzoo convert`, backbone and pretrained weights: a file is read by timm's
checkpoint loader (`timm.models.load_state_dict`: safetensors, or `torch.load(weights_only=True)`,
the usual containers unwrapped, DataParallel's and torch.compile's prefixes stripped), and a state
dict that does not fit a model is refused with the missing, unexpected and mis-shaped keys named,
on one line.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from timm.models import clean_state_dict, load_state_dict
from torch import nn

from .errors import UserError, first_sentence

# containers timm's loader does not unwrap (it takes 'state_dict' and 'model'; EMA weights only when
# asked, and here the plain weights come first)
OTHER_CONTAINER_KEYS = ("model_state_dict", "net", "state_dict_ema", "model_ema")


def read_state_dict(path, what: str = "checkpoint") -> dict:
    """{name: tensor} from a .safetensors or torch file; `what` names the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        if path.suffix != ".safetensors":
            check_torch_file(path)
        with warnings.catch_warnings():  # a foreign file's pickle protocol: its refusal is the error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated file, foreign pickle, not a checkpoint
        raise UserError(f"{what} {path} cannot be read safely as a state dict ({load_failure(e)})") from None
    for key in OTHER_CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = clean_state_dict(obj[key])
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{what} {path} holds no state dict of tensors")
    return obj


def torch_load(path):
    """torch.load without running pickled code; torch's warnings about a foreign file's pickle
    protocol are silenced, its refusal is the error (see `load_failure`)."""
    check_torch_file(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True)


def check_torch_file(path) -> None:
    """ValueError unless `path` starts as torch.save writes: a zip archive or a pickle (protocol 2+);
    without it, a text file fails deep in the unpickler with a message about opcodes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise EOFError("empty file")
    if not (head.startswith(b"PK\x03\x04") or head[0] == 0x80):
        raise ValueError("not a torch or safetensors weight file")


def load_failure(exc: BaseException) -> str:
    """Why torch.load(weights_only=True) or safetensors refused a file, as one whole sentence."""
    text = str(exc)
    if "Weights only load failed" in text or "weights_only=True blocked" in text:
        # torch's refusal spans paragraphs; keep only its reason
        reason = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[-1].splitlines()
                  if line.strip()] if "WeightsUnpickler error:" in text else []
        return ("it holds pickled Python objects other than tensors, which attnzoo never runs"
                + (f": {reason[0]}" if reason else ""))
    if isinstance(exc, EOFError):
        return f"{type(exc).__name__}: the file is empty or cut short"
    return first_sentence(exc)


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


_SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape "
                            r"torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
                            r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)")
_KEYS = re.compile(r'(Missing|Unexpected) key\(s\) in state_dict: ((?:"[^"]*"(?:, )?)+)')


def load_error_line(exc: BaseException, source: str, model_name: str, shown: int = 3) -> str:
    """torch's multi-line "Error(s) in loading state_dict" as one line: the file, the model, and
    the first missing, unexpected and mis-shaped keys (with the file's and the model's shapes)."""
    text = str(exc)
    shapes = [f"{k} ({a}) vs ({b})" for k, a, b in _SIZE_MISMATCH.findall(text)]
    keys = {kind: re.findall(r'"([^"]*)"', found) for kind, found in _KEYS.findall(text)}
    detail = describe_mismatch(keys.get("Missing", []), keys.get("Unexpected", []), shapes, shown=shown)
    detail = detail.replace("shape mismatches:", "shape mismatches (file vs model):")
    return f"{source} does not fit model '{model_name}': " + (detail or first_sentence(exc))


def in_current_layout(model: nn.Module, state: dict) -> dict:
    """`state` with its keys as `model.load_state_dict` sees them: renamed by the model's own key
    maps (`state_key_maps`, set by `add_attention` for checkpoints of its earlier layout)."""
    for key_map in getattr(model, "state_key_maps", ()):
        state = {key_map.rename(k): v for k, v in state.items()}
    return state


def load_state_strict(model: nn.Module, state: dict, source: str) -> None:
    """Load weights, refusing with the missing, unexpected and mis-shaped keys named."""
    state = in_current_layout(model, state)
    mismatch = state_mismatch(model.state_dict(), state)
    if any(mismatch):
        raise UserError(f"{source} does not fit the model: {describe_mismatch(*mismatch)}")
    model.load_state_dict(state)

"""`attnzoo convert`: official checkpoints -> attnzoo safetensors.

The shared steps live here (read the file without executing pickled code, unwrap the usual
containers, strip DataParallel's `module.` prefix, load strictly, save safetensors); each family
module only renames keys: `convert(state_dict, model_name) -> state_dict`.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from ..errors import UserError, choices_hint

CONVERTERS = {
    "lsas-official": "lsas",
    "sb-official": "sb",
    "san-official": "san",
    "lesa-official": "lesa",
    "ida-official": "ida",
}


def read_foreign_state(path) -> dict:
    """A plain {name: tensor} dict from a torch checkpoint, without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable or unsafe pickle
        raise UserError(f"checkpoint {path} cannot be read safely as a PyTorch state dict "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def convert_checkpoint(source: str, checkpoint, model_name: str, out, model_kwargs=None) -> str:
    """Convert, verify by strict loading, write `out`; returns a one-paragraph report."""
    from .. import create_model
    from ..engine.checkpoint import load_state_strict, save_weights

    if source not in CONVERTERS:
        raise UserError(f"unknown --from '{source}'; {choices_hint(source, CONVERTERS)}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the output is a .safetensors file")
    family = importlib.import_module(f"{__name__}.{CONVERTERS[source]}")
    state = read_foreign_state(checkpoint)
    converted = family.convert(state, model_name)
    kwargs = dict(model_kwargs or {})
    model = create_model(model_name, **kwargs)
    load_state_strict(model, converted, f"{source} checkpoint {checkpoint} (as {model_name})")
    num_classes = getattr(model, "num_classes", None)
    config = {"name": Path(out).stem,
              "model": {"name": model_name, "kwargs": {**kwargs, "num_classes": num_classes}},
              "paper": {"source": f"converted from {source} checkpoint {Path(checkpoint).name}"}}
    save_weights(out, model, config)
    return (f"converted {len(converted)} tensors from {checkpoint} ({source}) into {model_name}; "
            f"wrote {out}")

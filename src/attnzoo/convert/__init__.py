"""`attnzoo convert`: official checkpoints -> attnzoo safetensors.

The shared steps live here (read the file without executing pickled code, unwrap the usual
containers, strip DataParallel's `module.` prefix, load strictly, save safetensors); each family
module only renames keys: `convert(state_dict, model_name) -> state_dict`.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UserError, choices_hint
from ..weights import load_state_strict, read_state_dict

CONVERTERS = {
    "lsas-official": "lsas",
    "sb-official": "sb",
    "san-official": "san",
    "lesa-official": "lesa",
    "ida-official": "ida",
}


def convert_checkpoint(source: str, checkpoint, model_name: str, out, model_kwargs=None) -> str:
    """Convert, verify by strict loading, write `out`; returns a one-paragraph report."""
    from .. import create_model
    from ..engine.checkpoint import save_weights

    if source not in CONVERTERS:
        raise UserError(f"unknown --from '{source}'; {choices_hint(source, CONVERTERS)}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the output is a .safetensors file")
    family = importlib.import_module(f"{__name__}.{CONVERTERS[source]}")
    state = read_state_dict(checkpoint, "checkpoint")
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

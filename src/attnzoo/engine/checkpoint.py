"""Checkpoints: atomic writes, resumable training state, and safetensors weights.

- `last.pt`: the full training state (model, optimizer, scheduler, scaler, EMA, epoch, step, best
  metric, RNG states). Only tensors and plain containers, so it loads with `weights_only=True`.
- `best.safetensors`: weights only, with the resolved run config as JSON in the metadata, so a
  model can be rebuilt from the file alone (`load_model`).
Every write goes to a temporary file in the same folder and is renamed over the old one, so a kill
during a save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..weights import load_state_strict  # noqa: F401  (re-exported for callers)


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then atomically rename the finished file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_training_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, not a checkpoint at all
        raise UserError(f"checkpoint {path} cannot be read as an attnzoo training state "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def save_weights(path: Path, model: torch.nn.Module, config: dict | None = None) -> None:
    """Weights as safetensors (contiguous, de-duplicated), config JSON in the metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    metadata = {"format": "pt", "attnzoo_config": json.dumps(config or {})}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def read_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, config dict) from a best.safetensors or a last.pt file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; expected a run's "
                        "checkpoints/best.safetensors or checkpoints/last.pt")
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"checkpoint {path} is not a readable safetensors file ({e})") from None
        config = json.loads(metadata.get("attnzoo_config", "{}") or "{}")
        return state, config
    state = load_training_state(path)
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} holds no 'model' state; expected an attnzoo last.pt")
    return state["model"], state.get("config", {})


def load_model(path, map_location="cpu", **model_overrides):
    """Rebuild the network a checkpoint was trained as and load its weights.

    Returns (model in eval mode, Config). `model_overrides` replace constructor options.
    """
    from .. import create_model
    from .config import config_from_dict, insert_attention

    state, config = read_weights(path)
    if not config:
        raise UserError(f"checkpoint {path} carries no attnzoo config; it was not written by "
                        "`attnzoo train` (convert foreign weights with `attnzoo convert`)")
    cfg = config_from_dict(config)
    kwargs = {**cfg.model.kwargs, **model_overrides}  # num_classes is resolved there by `train`
    model = insert_attention(create_model(cfg.model.name, **kwargs), cfg.model)
    if cfg.train.freeze_bn:  # trained with FrozenBatchNorm2d, which has no num_batches_tracked
        from timm.layers import freeze_batch_norm_2d

        model = freeze_batch_norm_2d(model)
    load_state_strict(model, state, f"checkpoint {path}")
    return model.to(map_location).eval(), cfg


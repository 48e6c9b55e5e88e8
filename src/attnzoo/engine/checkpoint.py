"""Checkpoints: atomic writes, resumable training state, and safetensors weights.

- `last.pt`: the full training state (model, optimizer, scheduler, scaler, EMA, epoch, step, best
  metric, RNG states). Only tensors and plain containers, so it loads with `weights_only=True`.
- `best.safetensors`: weights only, with the resolved run config as JSON in the metadata, so a
  model can be rebuilt from the file alone (`load_model`).
Every write goes to a temporary file in the same folder and is renamed over the old one, so a kill
during a save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import io
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import UserError, file_errors
from ..weights import (
    describe_mismatch,
    in_current_layout,
    load_failure,
    load_state_strict,
    state_mismatch,
    torch_load,
)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it onto `path`.

    The bytes are made in memory first and written with Python's own file calls, so a full disk
    is an OSError (torch.save writing to a path reports it as an unrelated RuntimeError); any
    OSError becomes one UserError line and the previous file stays intact.
    """
    path = Path(path)
    with file_errors(f"write {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
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
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_training_state(path: Path) -> dict:
    path = Path(path)
    if path.suffix == ".safetensors":
        raise UserError(f"checkpoint {path} holds weights only, no training state to continue; give "
                        "a run's checkpoints/last.pt (to start from these weights: --set "
                        "model.checkpoint=PATH)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file; give a run's checkpoints/last.pt")
    try:
        return torch_load(path)
    except Exception as e:  # noqa: BLE001 - empty or truncated file, foreign pickle, not a checkpoint
        raise UserError(f"checkpoint {path} cannot be read as an attnzoo training state "
                        f"({load_failure(e)})") from None


def save_weights(path: Path, model: torch.nn.Module, config: dict | None = None) -> None:
    """Weights as safetensors (contiguous, de-duplicated), config JSON in the metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    metadata = {"format": "pt", "attnzoo_config": json.dumps(config or {})}
    atomic_write(path, save(state, metadata=metadata))


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
        try:
            config = json.loads(metadata.get("attnzoo_config", "{}") or "{}")
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise UserError(f"checkpoint {path}: its attnzoo_config metadata is not a JSON mapping; "
                            "the file was not written by attnzoo or is damaged")
        return state, config
    state = load_training_state(path)
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} holds no 'model' state; expected an attnzoo last.pt")
    return state["model"], state.get("config", {})


def load_model(path, map_location="cpu", **model_overrides):
    """Rebuild the network a checkpoint was trained as and load its weights.

    Returns (model in eval mode, Config). `model_overrides` replace constructor options.
    """
    from ..models.configured import create_configured_model
    from .config import config_from_dict

    state, config = read_weights(path)
    if not config:
        raise UserError(f"checkpoint {path} carries no attnzoo config; it was not written by "
                        "`attnzoo train` (convert foreign weights with `attnzoo convert`)")
    cfg = config_from_dict(config)
    kwargs = {**cfg.model.kwargs, **model_overrides}  # num_classes is resolved there by `train`
    model = create_configured_model(cfg.model, **kwargs)
    if cfg.train.freeze_bn:  # trained with FrozenBatchNorm2d, which has no num_batches_tracked
        from timm.layers import freeze_batch_norm_2d

        model = freeze_batch_norm_2d(model)
    load_state_strict(model, state, f"checkpoint {path}")
    return model.to(map_location).eval(), cfg


# What a resumed run may change of the run's own config; any other difference is refused. The
# number of processes may change too where the global batch stays the same (checked in train).
RESUME_MAY_CHANGE = ("name", "out_dir", "paper", "schedule.epochs", "data.root", "data.workers",
                     "data.eval_batch_size", "train.device", "train.compile", "train.checkpoint_steps",
                     "train.checkpoint_minutes", "train.log_every")
TRAINING_STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "progress", "rng")
_UNSET = "unset"


def config_changes(then: dict, now: dict) -> tuple[dict, list[str]]:
    """({key: [then, now]} of the differing keys that may change on resume, descriptions of the
    others), over every leaf key of the two config dicts."""
    from .runlog import flatten

    a, b = flatten(then), flatten(now)
    allowed, refused = {}, []
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key, _UNSET), b.get(key, _UNSET)
        seqs = isinstance(old, (list, tuple)) and isinstance(new, (list, tuple))
        if old == new or (seqs and list(old) == list(new)):  # YAML gives lists, dataclasses tuples
            continue
        may = any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)
        if key == "schedule.epochs" and b.get("schedule.name") == "onecycle":
            refused.append(f"schedule.epochs {old!r} in the checkpoint, {new!r} now (a one-cycle "
                           "schedule is fixed at the start: it cannot be extended)")
        elif may:
            allowed[key] = [old, new]
        else:
            refused.append(f"{key} {old!r} in the checkpoint, {new!r} now")
    return allowed, refused


def check_resumable(saved, path, config: dict, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> dict:
    """UserError saying what differs unless the training state `saved` (read from `path`) fits this
    run's `config` (a config dict), model and optimizer; checked before anything is loaded. Returns
    the config keys that changed as they may ({key: [then, now]}, see RESUME_MAY_CHANGE)."""
    if not (isinstance(saved, dict) and all(k in saved for k in TRAINING_STATE_KEYS)
            and isinstance(saved["model"], dict) and isinstance(saved["optimizer"], dict)):
        found = ", ".join(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
        raise UserError(f"checkpoint {path} is not an attnzoo training state (holds {found or 'nothing'}; "
                        f"expected {', '.join(TRAINING_STATE_KEYS)}): give a run's checkpoints/last.pt")
    changes, differences = {}, []
    if isinstance(saved.get("config"), dict):
        changes, differences = config_changes(saved["config"], config)
    mismatch = state_mismatch(unwrap(model).state_dict(), in_current_layout(unwrap(model), saved["model"]))
    if any(mismatch) and not differences:  # a config difference explains the states' mismatch
        differences.append(f"weights: {describe_mismatch(*mismatch, shown=3)}")
    groups = [len(g["params"]) for g in optimizer.state_dict()["param_groups"]]
    try:
        saved_groups = [len(g["params"]) for g in saved["optimizer"]["param_groups"]]
    except (TypeError, KeyError):  # not an optimizer's state
        saved_groups = None
    if saved_groups != groups and not differences:
        differences.append(f"optimizer parameter groups sized {saved_groups} in the checkpoint, {groups} now")
    if differences:
        may = ", ".join(k for k in RESUME_MAY_CHANGE if k not in ("name", "out_dir", "paper"))
        raise UserError(f"checkpoint {path} cannot continue this run: {'; '.join(differences)} (a "
                        f"resumed run keeps its own config except {may}; drop the other flags, or start "
                        "a new --name)")
    return changes

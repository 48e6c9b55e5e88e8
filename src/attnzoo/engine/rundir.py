"""The run-folder guard: a folder that holds anything of a run is written into only to continue it.

A new run needs an absent or empty folder. `--resume auto` continues from checkpoints/last.pt (which a
run writes before its first step), and starts afresh only where an earlier start stopped before that
(nothing to lose).
`--resume PATH` may continue a checkpoint in a new folder, never in one holding another run.
Temporary files left by a write that was killed half way are removed once the folder is ours.
A resumed run keeps its own config: `config_to_continue` puts the command line's keys on top of it.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError, check_writable, file_errors

LAST = Path("checkpoints") / "last.pt"


def config_to_continue(cfg, recipe: str | None, overrides: list[str], resume: str | None):
    """The config a `--resume` run continues with: the run's own, saved in the checkpoint it
    continues, with only the keys the command line gives (`recipe`, then `overrides`) on top, so
    that its defaults never replace the run's values; `cfg` (the command line's config, which names
    the run folder) where there is nothing to continue. Which keys may differ is checked by train."""
    import torch

    from .config import apply_overrides, config_from_dict, deep_merge, read_yaml

    checkpoint = checkpoint_to_resume(cfg.run_dir, resume) if resume else None
    if checkpoint is None:
        return cfg
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["config"]
    except Exception:  # noqa: BLE001 - train reports an unreadable checkpoint in one line
        return cfg
    if not isinstance(saved, dict):
        return cfg
    given = apply_overrides(read_yaml(recipe) if recipe else {}, overrides)  # as load_config reads them
    return config_from_dict(deep_merge(saved, {**given, "name": cfg.name, "out_dir": cfg.out_dir}))


def checkpoint_to_resume(run_dir: Path, resume: str | None) -> Path | None:
    """Check that `run_dir` may be written for `resume` (None, 'auto' or a last.pt path); returns
    the checkpoint to continue from, None for a fresh start. Reads only."""
    run_dir = Path(run_dir)
    held = run_contents(run_dir)
    last = run_dir / LAST
    if resume is None:
        if held:
            raise UserError(f"run folder {run_dir} already holds a run ({', '.join(held)}); continue "
                            "it with --resume auto or choose another --name")
        checkpoint = None
    elif resume == "auto":
        checkpoint = last if last.is_file() else None
        finished = finished_results(run_dir) if checkpoint is None else []
        if finished:
            raise UserError(f"run folder {run_dir} holds a finished run's results "
                            f"({', '.join(finished)}) but no {LAST} to continue "
                            "from; choose another --name or --out-dir")
    else:
        checkpoint = Path(resume)
        if not checkpoint.is_file():
            raise UserError(f"--resume {resume}: no such checkpoint file; give a run's {LAST} or auto")
        if held and not (last.exists() and last.resolve() == checkpoint.resolve()):
            raise UserError(f"run folder {run_dir} already holds another run ({', '.join(held)}); "
                            f"to continue {checkpoint} choose a new --name")
    return checkpoint


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder (making sure it can be written) and clear the temporary files of
    saves killed half way (see checkpoint.atomic_write); once `checkpoint_to_resume` allowed it."""
    check_writable(run_dir / "checkpoints", "run folder", folder=True)
    with file_errors(f"clean up run folder {run_dir}"):
        for stale in [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]:
            stale.unlink()


def run_contents(run_dir: Path) -> list[str]:
    """Names in `run_dir` of files and non-empty folders, not counting the temporary files of
    interrupted saves; [] when absent."""
    with file_errors(f"read run folder {run_dir}"):
        if not run_dir.exists():
            return []
        if not run_dir.is_dir():
            raise UserError(f"run folder {run_dir} is a file; choose another --name or --out-dir")
        return sorted(p.name for p in run_dir.iterdir() if not _is_tmp(p) and
                      not (p.is_dir() and all(_is_tmp(q) for q in p.iterdir())))


def finished_results(run_dir: Path) -> list[str]:
    """What a fresh start would destroy: summary, best weights, logged epochs."""
    found = [rel for rel in ("summary.json", "checkpoints/best.safetensors") if (run_dir / rel).exists()]
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def _is_tmp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")

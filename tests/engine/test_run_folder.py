"""The run-folder guard: a folder holding anything of a run is never written into without --resume,
and the temporary files of a save killed half way are cleared on the next start."""
import shutil

import pytest

from attnzoo.engine.rundir import checkpoint_to_resume, prepare_run_dir
from attnzoo.engine.train import train
from attnzoo.errors import UserError

from ..conftest import tiny_config

RUN_PARTS = ["config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt",
             "checkpoints/best.safetensors", "figures/curves.png", "tb"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run folder, copied by each test that damages it."""
    cfg = tiny_config(tmp_path_factory.mktemp("finished"), schedule={"epochs": 1})
    train(cfg, quiet=True)
    return cfg.run_dir


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _keep_only(finished, tmp_path, keep):
    """A copy of the finished run with only the parts in `keep`; its config for the same folder."""
    cfg = tiny_config(tmp_path, schedule={"epochs": 1})
    shutil.copytree(finished, cfg.run_dir)
    for rel in RUN_PARTS:
        if rel not in keep:
            path = cfg.run_dir / rel
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return cfg


# every partial state of a run folder, and an unrelated file in it
PARTIAL = [RUN_PARTS, [p for p in RUN_PARTS if p != "checkpoints/last.pt"],
           ["checkpoints/best.safetensors"], ["summary.json"], ["metrics.jsonl"], ["config.yaml"],
           ["figures/curves.png"], ["tb"], ["checkpoints/last.pt"]]


@pytest.mark.parametrize("keep", PARTIAL, ids=lambda k: "+".join(k) if len(k) < 3 else f"{len(k)} parts")
def test_a_new_run_never_writes_into_a_folder_holding_a_run(finished, tmp_path, keep):
    cfg = _keep_only(finished, tmp_path, keep)
    before = _snapshot(cfg.run_dir)
    with pytest.raises(UserError, match="already holds a run .*; continue it with --resume auto"):
        train(cfg, quiet=True)
    assert _snapshot(cfg.run_dir) == before


def test_a_stray_file_also_keeps_the_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"already holds a run \(notes.txt\)"):
        checkpoint_to_resume(run_dir, None)


@pytest.mark.parametrize("keep", [[p for p in RUN_PARTS if p != "checkpoints/last.pt"],
                                  ["checkpoints/best.safetensors"], ["summary.json"], ["metrics.jsonl"]])
def test_resume_auto_without_last_pt_refuses_to_restart_over_results(finished, tmp_path, keep):
    cfg = _keep_only(finished, tmp_path, keep)
    before = _snapshot(cfg.run_dir)
    with pytest.raises(UserError, match="holds a finished run's results .* but no checkpoints/last.pt"):
        train(cfg, resume="auto", quiet=True)
    assert _snapshot(cfg.run_dir) == before


@pytest.mark.parametrize("keep", [["config.yaml"], ["tb"], ["figures/curves.png"]])
def test_resume_auto_restarts_a_run_that_finished_no_epoch(finished, tmp_path, keep):
    cfg = _keep_only(finished, tmp_path, keep)
    (cfg.run_dir / "metrics.jsonl").write_text("")  # killed during its first epoch
    assert checkpoint_to_resume(cfg.run_dir, "auto") is None


def test_resume_auto_continues_from_last_pt_and_clears_stale_temporary_files(finished, tmp_path):
    cfg = _keep_only(finished, tmp_path, RUN_PARTS)
    stale = [cfg.run_dir / "checkpoints" / ".last.pt.k1ll3d.tmp", cfg.run_dir / ".summary.json.x.tmp"]
    for path in stale:
        path.write_bytes(b"")  # what a SIGKILL during a save leaves behind
    assert checkpoint_to_resume(cfg.run_dir, "auto") == cfg.run_dir / "checkpoints" / "last.pt"
    prepare_run_dir(cfg.run_dir)  # what train does next
    assert not any(path.exists() for path in stale)
    assert (cfg.run_dir / "checkpoints" / "last.pt").stat().st_size > 0


@pytest.mark.parametrize("contents", [[], ["checkpoints/"], ["checkpoints/.last.pt.abc.tmp"]])
def test_an_empty_folder_or_leftover_temporaries_start_a_new_run(tmp_path, contents):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for rel in contents:
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if rel.endswith("/") else path.write_bytes(b"")
    assert checkpoint_to_resume(run_dir, None) is None
    prepare_run_dir(run_dir)
    assert not list(run_dir.rglob("*.tmp"))


def test_resume_from_a_path_never_writes_into_another_run(finished, tmp_path):
    other = _keep_only(finished, tmp_path, ["summary.json"]).run_dir
    with pytest.raises(UserError, match="already holds another run"):
        checkpoint_to_resume(other, str(finished / "checkpoints" / "last.pt"))
    fresh = tmp_path / "fork"
    assert checkpoint_to_resume(fresh, str(finished / "checkpoints" / "last.pt")) == finished / "checkpoints" / "last.pt"
    assert checkpoint_to_resume(finished, str(finished / "checkpoints" / "last.pt")) is not None
    with pytest.raises(UserError, match="no such checkpoint file"):
        checkpoint_to_resume(fresh, str(tmp_path / "missing.pt"))

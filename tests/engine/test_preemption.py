"""Long runs survive a stop: checkpoints inside an epoch, a kill at every write of the save
sequence, SIGTERM/SIGUSR1 (exit 143, DataLoader workers leave the signal to the main process),
Ctrl-C (130), and a resume that keeps the run's own config."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import attnzoo.engine.train as T
from attnzoo.cli import main
from attnzoo.engine import checkpoint as ckpt
from attnzoo.engine.runlog import RunLog

from ..conftest import ROOT, child_env, tiny_config
from ..test_cli import TINY, image_folder

TIMES = ("img_per_s", "time_s")  # the only fields of metrics.jsonl that a resume may change


class _Killed(BaseException):
    """Stands for kill -9: nothing of the process runs on (no except clause catches it)."""


def _config(tmp_path, **train):
    # 2 steps an epoch; a checkpoint after every step
    return tiny_config(tmp_path, data={"options": {"num_train": 32, "num_test": 16}},
                       schedule={"epochs": 1}, train={"checkpoint_steps": 1, "ema_decay": 0.5, **train})


def _rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def _assert_same_run(a_dir, b_dir):
    a = torch.load(a_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(b_dir / "checkpoints" / "last.pt", weights_only=True)
    assert a["progress"]["step"] == b["progress"]["step"]
    for part in ("model", "ema"):
        for key in b[part] or {}:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert _rows(a_dir) == _rows(b_dir)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    torch.set_num_threads(1)  # as every test here (module fixtures come before the autouse one)
    cfg = _config(tmp_path_factory.mktemp("straight"))
    T.train(cfg, quiet=True)
    return cfg.run_dir


# the save sequence of a one-epoch run of two steps: last.pt before the first step, after step 1
# (inside the epoch); at the epoch's end best.safetensors, the metrics row, last.pt; summary.json
WRITES = ["last.pt at the start", "last.pt inside the epoch", "best.safetensors", "metrics row",
          "last.pt at the epoch end", "summary.json"]


@pytest.mark.parametrize("kill_after", range(len(WRITES)), ids=WRITES)
def test_a_kill_after_any_write_leaves_a_folder_that_resume_auto_finishes_identically(
        tmp_path, monkeypatch, straight, kill_after):
    writes = [0]
    real_write, real_row = ckpt.atomic_write, RunLog.epoch

    def counted(real):
        def write(*args, **kwargs):
            real(*args, **kwargs)
            writes[0] += 1
            if writes[0] == kill_after + 1:
                raise _Killed
        return write

    monkeypatch.setattr(ckpt, "atomic_write", counted(real_write))
    monkeypatch.setattr(RunLog, "epoch", counted(real_row))
    cfg = _config(tmp_path)
    with pytest.raises(_Killed):
        T.train(cfg, quiet=True)
    monkeypatch.setattr(ckpt, "atomic_write", real_write)
    monkeypatch.setattr(RunLog, "epoch", real_row)
    if kill_after == 1:  # the mid-epoch checkpoint records where the epoch stands
        progress = ckpt.load_training_state(cfg.run_dir / "checkpoints" / "last.pt")["progress"]
        assert (progress["epoch"], progress["batch"], progress["step"]) == (0, 1, 1)
        assert progress["epoch_images"] == 16 and progress["epoch_loss"] > 0
    T.train(cfg, resume="auto", quiet=True)
    _assert_same_run(cfg.run_dir, straight)


def _script(body: str, tmp_path: Path, **popen) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        torch.set_num_threads(1)
        import attnzoo.engine.train as T
        from attnzoo.cli import main
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_sigterm_to_the_process_group_saves_mid_epoch_and_exits_143(tmp_path):
    """An image folder read by a DataLoader worker: the signal reaches the worker too (as SLURM
    sends it to every process of a job); the worker ignores it, the step in flight finishes,
    last.pt is written, exit 143 naming the command that continues; the resumed run ends exactly
    as one never signalled."""
    data = image_folder(tmp_path / "images", 2, (("train", 12), ("val", 4)), (20, 18))
    argv = ["train", "--out-dir", str(tmp_path / "runs"), "--data", "imagefolder", "--data-dir", str(data),
            "--set", "model.name=resnet_cifar", "--set", "model.kwargs.depth=8", "--set", "data.img_size=16",
            "--set", "data.workers=1", "--set", "train.deterministic=true", "--batch-size", "4",
            "--epochs", "1", "--device", "cpu", "--quiet"]  # 6 steps
    stopped = _script(f"""
        real = T.build_loss
        def build_loss(*a, **kw):
            loss, calls = real(*a, **kw), [0]
            def counted(logits, target):
                calls[0] += 1
                if calls[0] == 3:
                    os.killpg(os.getpgid(0), signal.SIGTERM)
                return loss(logits, target)
            return counted
        T.build_loss = build_loss
        sys.exit(main({[*argv, "--name", "stopped"]!r}))
    """, tmp_path, start_new_session=True)
    out, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 143, err[-3000:]
    assert "worker" not in err.lower(), err
    assert f"attnzoo train --name stopped --out-dir {tmp_path / 'runs'} --resume auto` continues" in err
    run = tmp_path / "runs" / "stopped"
    progress = ckpt.load_training_state(run / "checkpoints" / "last.pt")["progress"]
    assert (progress["epoch"], progress["batch"], progress["step"]) == (0, 3, 3)
    assert main([*argv, "--name", "stopped", "--resume", "auto"]) == 0
    assert main([*argv, "--name", "straight"]) == 0
    _assert_same_run(run, tmp_path / "runs" / "straight")


def test_sigusr1_at_an_epoch_end_saves_and_exits_143(tmp_path, monkeypatch, capsys):
    """SLURM's warning signal during the evaluation that ends epoch 1 of 2: the epoch's checkpoint
    is written, then the run stops; the resumed run ends as one never signalled."""
    real = T.evaluate_splits

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "evaluate_splits", signalled)
    argv = ["train", "--name", "u", "--out-dir", str(tmp_path), "--quiet", *TINY, "--epochs", "2",
            "--set", "train.deterministic=true"]
    assert main(argv) == 143
    assert "stopped by SIGUSR1 after step 2 (epoch 2, batch 0)" in capsys.readouterr().err
    assert ckpt.load_training_state(tmp_path / "u" / "checkpoints" / "last.pt")["progress"]["epoch"] == 1
    monkeypatch.setattr(T, "evaluate_splits", real)
    assert main([*argv, "--resume", "auto"]) == 0
    assert main([argv[0], "--name", "v", *argv[3:]]) == 0
    _assert_same_run(tmp_path / "u", tmp_path / "v")


def test_ctrl_c_exits_130_naming_the_command_that_continues(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train_one_epoch", interrupted)
    assert main(["train", "--name", "mine", "--out-dir", str(tmp_path), "--quiet", *TINY]) == 130
    err = capsys.readouterr().err
    assert f"`attnzoo train --name mine --out-dir {tmp_path} --resume auto` continues" in err


def test_resume_keeps_the_runs_own_config(tmp_path, capsys):
    """A run resumed without flags continues as it was configured (not with the defaults); flags
    that would change it are refused, each difference named; schedule.epochs extends it and the
    change is logged in metrics.jsonl."""
    base = ["train", "--name", "rr", "--out-dir", str(tmp_path), "--quiet"]
    assert main([*base, *TINY, "--set", "optim.lr=0.02"]) == 0
    run = tmp_path / "rr"
    config = (run / "config.yaml").read_text()
    assert main([*base, "--resume", "auto"]) == 0  # defaults would say 6 epochs, batch 128, lr 0.1
    assert (run / "config.yaml").read_text() == config
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert main([*base, "--resume", "auto", "--lr", "0.1", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "data.batch_size 16 in the checkpoint, 8 now; optim.lr 0.02 in the checkpoint, 0.1 now" in err
    assert main([*base, "--resume", "auto", "--epochs", "2", "--set", "data.workers=1"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["config_changes"] == {"schedule.epochs": [1, 2], "data.workers": [0, 1]}
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert "epochs: 2" in (run / "config.yaml").read_text()


def test_the_global_batch_of_a_run_is_kept(tmp_path):
    cfg = tiny_config(tmp_path, schedule={"epochs": 1})
    T.train(cfg, quiet=True)
    state = ckpt.load_training_state(cfg.run_dir / "checkpoints" / "last.pt")
    assert state["progress"]["global_batch"] == 16
    state["progress"]["global_batch"] = 15  # as 3 processes would have split 16
    torch.save(state, cfg.run_dir / "checkpoints" / "last.pt")
    with pytest.raises(T.UserError, match="global batches of 15 images, data.batch_size=16 over 1 processes"):
        T.train(cfg, resume="auto", quiet=True)


def test_which_config_keys_a_resume_may_change():
    then = {"name": "a", "schedule": {"name": "cosine", "epochs": 2}, "data": {"workers": 2, "options": {}},
            "optim": {"lr": 0.1, "betas": [0.9, 0.999]}}
    now = {"name": "b", "schedule": {"name": "cosine", "epochs": 5},
           "data": {"workers": 0, "options": {"k": 1}},
           "optim": {"lr": 0.1, "betas": (0.9, 0.999)}}
    allowed, refused = ckpt.config_changes(then, now)
    assert allowed == {"name": ["a", "b"], "schedule.epochs": [2, 5], "data.workers": [2, 0]}
    assert refused == ["data.options.k 'unset' in the checkpoint, 1 now"]
    then["schedule"]["name"] = now["schedule"]["name"] = "onecycle"
    allowed, refused = ckpt.config_changes(then, now)
    assert "schedule.epochs" not in allowed and "cannot be extended" in refused[-1]


def test_ranks_agree_on_a_stop_at_log_steps_only(monkeypatch):
    """Under DDP the one collective of the stop decision is at log steps; between them no process
    waits on another, and a signal seen by one rank stops every rank after the same step."""
    import torch.distributed as dist

    from attnzoo.engine.preemption import StopControl

    calls = []

    def all_reduce(t, op=None):
        calls.append(step)
        t.fill_(1.0 if step == 8 else 0.0)  # rank 1 was signalled before step 8's agreement

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    saves = []
    with StopControl(checkpoint_steps=3, checkpoint_minutes=0, log_every=4, distributed=True,
                     command="attnzoo train ...") as control:
        for step in range(1, 11):
            if control.after_step(step, epoch_end=False, save=lambda s=step: saves.append(s)):
                break
    assert calls == [4, 8, "barrier"] and step == 8
    assert saves == [3, 6, 8]  # the cadence, then the stop's save


def test_ranks_that_see_different_checkpoints_are_refused(monkeypatch):
    import torch.distributed as dist

    from attnzoo.engine.distributed import check_same_checkpoint

    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: t.fill_(1))  # 1 of 2 ranks sees one
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with pytest.raises(T.UserError, match="only 1 of 2 processes see a checkpoint .* shares"):
        check_same_checkpoint(None, "cpu")

"""End-to-end runs of the engine on tiny synthetic data: run folder, resume after a kill,
atomic checkpoints, divergence, distributed equivalence."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnzoo.engine import checkpoint as ckpt
from attnzoo.engine.train import TrainingDiverged, train
from attnzoo.errors import UserError

from ..conftest import ROOT, child_env, tiny_config

aten = torch.ops.aten


def test_run_folder_has_everything_design_names(tmp_path):
    cfg = tiny_config(tmp_path, train={"ema_decay": 0.9})
    summary = train(cfg, quiet=True)
    run = cfg.run_dir
    for rel in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt",
                "checkpoints/best.safetensors", "figures/curves.png"):
        assert (run / rel).is_file(), rel
    assert any((run / "tb").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "lr", "img_per_s", "time_s", "eval", "eval_ema"} <= set(rows[0])
    assert set(rows[0]["eval"]) == {"test", "test_swapped"}
    assert {"top1", "top5", "loss"} == set(rows[0]["eval"]["test"])
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["params"] == summary["params"] > 0 and on_disk["macs"] > 0
    assert on_disk["epochs_run"] == 2 and on_disk["stopped"] == "completed"
    assert 0 <= on_disk["best"]["test"]["top1"] <= 100
    # the best weights rebuild the network from the file alone
    model, loaded_cfg = ckpt.load_model(run / "checkpoints" / "best.safetensors")
    assert loaded_cfg.model.name == "resnet_cifar" and model.num_classes == 10


def _run_script(*parts: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = "".join(textwrap.dedent(p) for p in parts)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=300)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    """A run SIGKILLed in the middle of its second epoch and resumed with --resume auto ends with
    exactly the weights of a run that was never interrupted."""
    common = f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        torch.set_num_threads(1)
        from tests.conftest import tiny_config
        import attnzoo.engine.train as T
        from pathlib import Path
        cfg = tiny_config(Path({str(tmp_path)!r}) / NAME, schedule={{"epochs": 3}},
                          data={{"augment": "crop_flip"}}, train={{"ema_decay": 0.5}})
    """
    killer = """
        real = T.build_loss
        def build_loss(*a, **kw):
            loss, calls = real(*a, **kw), [0]
            def counted(logits, target):
                calls[0] += 1
                if calls[0] == 6:  # step 2 of epoch 2 (4 steps an epoch)
                    os.kill(os.getpid(), signal.SIGKILL)
                return loss(logits, target)
            return counted
        T.build_loss = build_loss
        T.train(cfg, quiet=True)
    """
    killed = _run_script(common.replace("NAME", "'killed'"), killer, tmp_path=tmp_path)
    assert killed.returncode == -9, killed.stderr
    last = tmp_path / "killed" / "runs" / "tiny" / "checkpoints" / "last.pt"
    assert ckpt.load_training_state(last)["progress"]["epoch"] == 1
    resumed = _run_script(common.replace("NAME", "'killed'"), "T.train(cfg, resume='auto', quiet=True)",
                          tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight = _run_script(common.replace("NAME", "'straight'"), "T.train(cfg, quiet=True)",
                           tmp_path=tmp_path)
    assert straight.returncode == 0, straight.stderr
    a = torch.load(last, weights_only=True)
    b = torch.load(tmp_path / "straight" / "runs" / "tiny" / "checkpoints" / "last.pt",
                   weights_only=True)
    assert a["progress"]["epoch"] == b["progress"]["epoch"] == 3
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in b["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    rows = (tmp_path / "killed" / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_kill_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_training_state(path, {"step": torch.tensor(1)})

    def dies_halfway(fd):
        raise KeyboardInterrupt  # the process is stopped after writing, before the rename

    monkeypatch.setattr(ckpt.os, "fsync", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_training_state(path, {"step": torch.tensor(2)})
    assert ckpt.load_training_state(path)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import attnzoo.engine.train as T

    real = T.build_loss

    def nan_in_epoch_two(*args, **kwargs):
        loss, calls = real(*args, **kwargs), [0]

        def wrapped(logits, target):
            calls[0] += 1
            value = loss(logits, target)
            return value * float("nan") if calls[0] == 6 else value
        return wrapped

    monkeypatch.setattr(T, "build_loss", nan_in_epoch_two)
    cfg = tiny_config(tmp_path, schedule={"epochs": 3})
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, between steps 5 and 8"):
        train(cfg, quiet=True)
    state = ckpt.load_training_state(cfg.run_dir / "checkpoints" / "last.pt")
    assert state["progress"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="not a readable safetensors file"):
        ckpt.load_model(bad)
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot be read as an attnzoo training state"):
        ckpt.load_model(bad)
    with pytest.raises(UserError, match="does not exist"):
        ckpt.load_model(tmp_path / "missing.safetensors")


def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) and the same global batch ends with the weights of the
    one-process run, to float tolerance. BatchNorm is frozen so batch statistics do not depend on
    how the global batch is split (SyncBatchNorm needs a GPU)."""
    overrides = ["--set", "model.name=resnet_cifar", "--set", "model.kwargs.depth=8",
                 "--set", "data.options.num_train=64", "--set", "data.options.num_test=32",
                 "--set", "data.workers=0", "--set", "train.deterministic=true",
                 "--set", "train.freeze_bn=true", "--set", "schedule.epochs=2",
                 "--batch-size", "16", "--device", "cpu", "--quiet"]
    env = child_env()
    one = subprocess.run([sys.executable, "-m", "attnzoo.cli", "train", "--name", "one",
                          "--out-dir", str(tmp_path), *overrides], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "attnzoo.cli", "train", "--name", "two",
                          "--out-dir", str(tmp_path), *overrides], env=env, capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert sb["world_size"] == 2 and sb["steps"] == sa["steps"] == 8
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert sa["final"]["test"]["top1"] == pytest.approx(sb["final"]["test"]["top1"])


def test_bf16_autocast_channels_last_and_clipping_run_on_cpu(tmp_path):
    cfg = tiny_config(tmp_path, schedule={"epochs": 1},
                      train={"amp": "bf16", "channels_last": True, "label_smoothing": 0.1},
                      optim={"name": "adamw", "lr": 1e-3, "clip_grad": 1.0,
                             "decay_norm_and_bias": False})
    summary = train(cfg, quiet=True)
    assert summary["steps"] == 4 and 0 <= summary["final"]["test"]["top1"] <= 100


def test_early_stopping_ends_the_run(tmp_path):
    # lr 0: the weights never change, so the first evaluation stays the best and patience runs out
    cfg = tiny_config(tmp_path, schedule={"name": "constant", "epochs": 6},
                      optim={"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0},
                      train={"early_stop": 2})
    summary = train(cfg, quiet=True)
    assert summary["stopped"] == "early_stop" and summary["epochs_run"] == 3


def test_a_timm_model_trains_by_name(tmp_path):
    cfg = tiny_config(tmp_path, model={"name": "resnet10t"}, schedule={"epochs": 1})
    cfg.model.kwargs = {}
    summary = train(cfg, quiet=True)
    assert summary["model"] == "resnet10t" and summary["params"] > 1e6


def test_metrics_record_the_lr_each_epoch_trained_with(tmp_path):
    cfg = tiny_config(tmp_path, schedule={"name": "multistep", "milestones": [1], "gamma": 0.1})
    train(cfg, quiet=True)
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.005])  # the drop shows at epoch 2


class HostSyncs(TorchDispatchMode):
    """Counts the ops that make the host wait for the device: reading a value out of a tensor
    (`_local_scalar_dense`: item(), float(), bool(), tolist()), data-dependent shapes (`nonzero`),
    `is_nonzero`, `equal`, and copies from a non-CPU tensor to the CPU. On a CPU run nothing really
    waits, so each such op is counted as the sync it would be on a GPU."""

    OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.is_nonzero.default, aten.equal.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.OPS or (func in (aten._to_copy.default, aten.copy_.default) and self._to_host(func, args, kwargs)):
            self.count += 1
        return func(*args, **kwargs)

    @staticmethod
    def _to_host(func, args, kwargs) -> bool:
        if func is aten.copy_.default:  # copy_(dst, src)
            return args[0].device.type == "cpu" and args[1].device.type != "cpu"
        target = kwargs.get("device")
        return args[0].device.type != "cpu" and target is not None and torch.device(target).type == "cpu"


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_a_tiny_run_waits_for_the_device_only_at_log_steps(tmp_path, monkeypatch, optim):
    """Over whole epochs (loader, forward, backward, gradient accumulation, clipping, GradScaler,
    optimizer, schedule, EMA) the only host syncs are the log steps', one each. The CUDA setup is
    imposed on the CPU: an enabled GradScaler and torch's fused optimizers."""
    import attnzoo.engine.train as T

    real_optimizer = T.build_optimizer
    monkeypatch.setattr(T, "build_optimizer", lambda model, cfg, fused=False: real_optimizer(model, cfg, fused=True))
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(T.torch.amp, "GradScaler", lambda *a, **kw: scaler("cpu", init_scale=256.0))
    syncs = {"log": 0, "step": 0, "log_steps": 0}
    mode = HostSyncs()
    real_log_step, real_epoch = T.log_step, T.train_one_epoch

    def log_step(*args, **kwargs):
        before = mode.count
        syncs["step"] += before
        out = real_log_step(*args, **kwargs)
        syncs["log"] += mode.count - before
        syncs["log_steps"] += 1
        mode.count = 0
        return out

    def train_one_epoch(*args, **kwargs):
        with mode:
            out = real_epoch(*args, **kwargs)
        syncs["step"] += mode.count
        mode.count = 0
        return out

    monkeypatch.setattr(T, "log_step", log_step)
    monkeypatch.setattr(T, "train_one_epoch", train_one_epoch)
    cfg = tiny_config(tmp_path, schedule={"epochs": 2},
                      data={"batch_size": 8, "augment": "crop_flip", "cutout": 4},
                      optim={"name": optim, "lr": 0.01, "clip_grad": 1.0},
                      train={"ema_decay": 0.9, "log_every": 3, "accum_steps": 2})
    summary = train(cfg, quiet=True)
    # 8 steps an epoch, log steps every 3 steps of the run: after steps 3, 6, 9, 12, 15, and at
    # the ends of the epochs (8, 16)
    assert summary["steps"] == 16
    assert syncs == {"log": 7, "step": 0, "log_steps": 7}


def test_gradient_accumulation_matches_the_whole_batch(tmp_path):
    """The same global batch read as 4 micro-batches ends with the weights of one batch, within
    round-off (BatchNorm frozen: batch statistics depend on the batch's size)."""
    import attnzoo.engine.train as T

    runs = {}
    for accum in (1, 4):
        cfg = tiny_config(tmp_path / str(accum), schedule={"epochs": 2},
                          train={"accum_steps": accum, "freeze_bn": True, "ema_decay": 0.5},
                          optim={"clip_grad": 1.0})
        summary = T.train(cfg, quiet=True)
        assert summary["steps"] == 8
        runs[accum] = torch.load(cfg.run_dir / "checkpoints" / "last.pt", weights_only=True)
    for key, value in runs[1]["model"].items():
        torch.testing.assert_close(runs[4]["model"][key], value, rtol=1e-4, atol=1e-5)
    for key, value in runs[1]["ema"].items():
        torch.testing.assert_close(runs[4]["ema"][key], value, rtol=1e-4, atol=1e-5)


def test_accumulation_must_divide_the_batch(tmp_path):
    with pytest.raises(UserError, match="train.accum_steps=3 must divide data.batch_size=16"):
        train(tiny_config(tmp_path, train={"accum_steps": 3}), quiet=True)


def test_auto_precision_is_bf16_channels_last_on_cuda_and_float32_on_cpu():
    from attnzoo.engine.config import load_config
    from attnzoo.engine.device import resolve_precision

    cfg = load_config("senet_resnet50_imagenet")
    assert (cfg.train.amp, cfg.train.channels_last) == ("auto", "auto")
    assert resolve_precision(cfg.train.amp, cfg.train.channels_last, torch.device("cpu")) == ("none", False)
    assert resolve_precision(cfg.train.amp, cfg.train.channels_last, torch.device("cuda", 0)) == ("bf16", True)
    assert resolve_precision("fp16", False, torch.device("cuda", 0)) == ("fp16", False)  # explicit stays
    lesa = load_config("lesa_resnet50_imagenet")
    assert (lesa.train.amp, lesa.train.channels_last) == ("none", False)  # LESA stays float32

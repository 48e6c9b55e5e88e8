"""The command line: every user error is one line on stderr and exit status 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnzoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.name=resnet_cifar", "--set", "model.kwargs.depth=8",
        "--set", "data.options.num_train=32", "--set", "data.options.num_test=16",
        "--set", "data.workers=0", "--batch-size", "16", "--epochs", "1", "--device", "cpu"]


def one_line_error(capsys, argv, expected: str):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnzoo: error: ") and "\n" not in err, err
    assert expected in err, err
    return err


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", "resnet21_cifar"], "unknown model 'resnet21_cifar'; did you mean"),
    (["train", "--set", "model.kwargs.depth=21", "--model", "resnet_cifar"], "depth 21 does not fit"),
    (["train", "--set", "model.kwargs.block=wide", "--model", "resnet_cifar"], "valid: basic, bottleneck"),
    (["train", "--set", "optim.name=lion"], "valid: sgd, adamw, adam"),
    (["train", "--data", "mnist"], "unknown dataset 'mnist'"),
    (["train", "--data", "cifar10", "--data-dir", "/nonexistent"], "/nonexistent"),
    (["train", "no_such_recipe"], "neither a file nor a bundled recipe"),
    (["train", "--set", "model.kwargs.attn=nope"], "unknown attention block 'nope'"),
    (["train", "--epochs", "x"], "invalid int value"),
    (["bogus"], "invalid choice"),
    (["eval", "--checkpoint", "/nonexistent/best.safetensors"], "does not exist"),
    (["models", "zzz*"], "no attnzoo model matches"),
    (["convert", "--from", "nowhere", "x.pt", "--model", "resnet20_cifar", "--out", "y.safetensors"],
     "unknown --from 'nowhere'"),
    (["train", "--model", ""], "a model name is a non-empty string, got ''"),
    (["train", "--name", ""], "name '': a run name is one folder name"),
    (["train", "--data", "cifar11", "--set", "data.options.num_train=8"], "unknown dataset 'cifar11'; did you mean"),
    (["train", "--set", "optim.lr=5e-4", "--set", "optim.weight_decay=-1e-4"],
     "optim.weight_decay must be at least 0, got -0.0001"),
    (["train", "--set", "optim.lr=.nan"], "optim.lr: expected a finite number, got nan"),
    (["info", "resnet20_cifar", "--kwarg", "depth"], "--kwarg 'depth': expected KEY=VALUE, e.g. attn=se"),
    (["info", "resnet20_cifar", "--kwarg", "num_classes=abc"], "num_classes must be an integer of at least 0"),
    (["info", "senet_cifar", "--kwarg", "attn_kwargs={reduction: -4}"], "reduction must be positive, got -4"),
    (["bench", "--models", "resnet20_cifar", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["analyze", "--checkpoint", "x", "--num-samples", "-1"], "argument --num-samples: must be at least 0"),
    (["compare", "--models", "resnet20_cifar", "--seeds", "two"], "argument --seeds: expected an integer"),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, argv, expected):
    one_line_error(capsys, argv + ["--out-dir", str(tmp_path)] if argv[0] == "train" else argv, expected)


def test_train_then_eval_and_models(capsys, tmp_path):
    assert main(["train", "--name", "t", "--out-dir", str(tmp_path), "--quiet", *TINY]) == 0
    best = tmp_path / "t" / "checkpoints" / "best.safetensors"
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(best), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert printed["metrics"]["test"]["top1"] == pytest.approx(summary["final"]["test"]["top1"])
    assert main(["models", "resnet*_cifar"]) == 0
    listing = capsys.readouterr().out
    assert "resnet20_cifar" in listing and "0.27M" in listing


def test_eval_refuses_a_corrupt_checkpoint_without_traceback(tmp_path):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(b"not a safetensors file")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "attnzoo.cli", "eval", "--checkpoint", str(bad)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "not a readable safetensors file" in proc.stderr


def test_exit_status_1_for_a_failed_run_and_130_for_an_interruption(capsys, monkeypatch):
    import attnzoo.engine.train as T

    def diverges(*args, **kwargs):
        raise T.TrainingDiverged("loss became nan at epoch 1, step 3")

    monkeypatch.setattr(T, "train", diverges)
    assert main(["train"]) == 1
    assert capsys.readouterr().err == "attnzoo: error: loss became nan at epoch 1, step 3\n"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train", interrupted)
    assert main(["train"]) == 130
    assert "--resume auto" in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug keeps its traceback")

    monkeypatch.setattr(T, "train", bug)
    with pytest.raises(ZeroDivisionError):
        main(["train"])


def test_shortcut_values_stay_strings_and_scientific_numbers_are_numbers(monkeypatch):
    import attnzoo.engine.train as T

    seen = {}

    def fake_train(cfg, **kwargs):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(T, "train", fake_train)
    assert main(["train", "--name", "2024", "--data-dir", "1e5", "--set", "optim.lr=5e-4"]) == 0
    cfg = seen["cfg"]
    assert cfg.name == "2024" and cfg.data.root == "1e5" and cfg.optim.lr == 5e-4

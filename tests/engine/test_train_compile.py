"""`train.compile`: the model is compiled in place for training and evaluation, off by default.

Inductor's C++ build takes minutes on a CPU, so torch.compile runs here with the `eager` backend
(Dynamo traces the model, the graphs run eagerly); the GPU check (benchmarks/gpu_check.py, part 4)
runs the real inductor path.
"""
import pytest
import torch
from torch._dynamo.utils import counters

from attnzoo.engine import checkpoint as ckpt
from attnzoo.engine.config import config_from_dict
from attnzoo.engine.train import train
from attnzoo.errors import UserError

from ..conftest import tiny_config


def test_compile_is_off_by_default_and_must_be_a_boolean():
    assert config_from_dict({}).train.compile is False
    with pytest.raises(UserError, match="train.compile: expected true or false"):
        config_from_dict({"train": {"compile": "fast"}})


def test_compiled_training_and_evaluation_keep_plain_checkpoints(tmp_path, monkeypatch):
    compiled = []
    real_compile = torch.compile

    def eager_compile(fn, *args, **kwargs):
        compiled.append(fn)
        return real_compile(fn, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    counters.clear()
    cfg = tiny_config(tmp_path, train={"compile": True, "ema_decay": 0.9})
    summary = train(cfg, quiet=True)
    assert len(compiled) == 1 and compiled[0].__self__.__class__.__name__ == "CifarResNet"
    assert counters["stats"]["unique_graphs"] >= 2  # a train-mode and an eval-mode graph
    assert summary["epochs_run"] == 2 and summary["macs"] > 0
    assert torch.isfinite(torch.tensor(summary["final"]["test"]["loss"]))
    state = torch.load(cfg.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in state["model"])  # keys of the plain network
    model, _ = ckpt.load_model(cfg.run_dir / "checkpoints" / "best.safetensors")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)

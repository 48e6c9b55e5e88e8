"""`attnzoo bench`: throughput, peak memory, params and MACs per model; table; bad input."""
from pathlib import Path

import pytest

from attnzoo.commands.bench import benchmark, format_table
from attnzoo.errors import UserError

KEYS = {"model", "device", "batch_size", "img_size", "num_classes", "params", "macs", "train_img_per_s",
        "infer_img_per_s", "train_peak_mem_mb", "infer_peak_mem_mb", "steps", "warmup", "mem_note"}


def test_benchmark_in_process_rows_and_table():
    rows = benchmark(["resnet_cifar", "resnet20_cifar"], batch_size=4, img_size=16, steps=1, warmup=1,
                     model_kwargs={"depth": 8, "in_chans": 1}, isolate=False)
    assert [r["model"] for r in rows] == ["resnet_cifar", "resnet20_cifar"]
    for r in rows:
        assert set(r) == KEYS
        assert r["device"] == "cpu" and r["img_size"] == 16 and r["batch_size"] == 4
        assert r["train_img_per_s"] > 0 and r["infer_img_per_s"] > 0
        assert r["train_peak_mem_mb"] >= 0 and r["infer_peak_mem_mb"] >= 0
    # depth 8 and one input channel for both: same network, same counts
    assert rows[0]["params"] == rows[1]["params"] == 78_042 - 16 * 9 * 2  # one input channel, not 3
    assert rows[0]["macs"] == rows[1]["macs"] > 0
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[2].startswith("| model | img size | params | MACs | train img/s | infer img/s")
    assert lines[4].startswith("| resnet_cifar | 16 | 77.75K |") and len(lines) == 6
    assert format_table([]) == ""


def test_benchmark_isolated_process_measures_memory():
    """The default on CPU: each model in a fresh process, its own default input size (32 px)."""
    (row,) = benchmark(["resnet_cifar"], batch_size=8, steps=1, warmup=0, model_kwargs={"depth": 8})
    assert row["img_size"] == 32 and row["num_classes"] == 10
    assert row["train_peak_mem_mb"] > 0  # weights, grads, momentum and activations at least
    assert "VmHWM" in row["mem_note"] or "ru_maxrss" in row["mem_note"]


def test_isolated_errors_come_back_as_user_errors(tmp_path, monkeypatch):
    """The child process body reports a UserError, and the parent raises it again as one."""
    import json
    import subprocess

    from attnzoo.commands import bench

    args = ["resnet_cifar", 2, None, "cpu", 1, 0, {"depth": 9}]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"args": args, "threads": 1, "module": None}))
    bench._child_main(str(request))  # in this process: same code as the child runs
    reply = json.loads((tmp_path / "request.json.reply").read_text())
    assert reply["error"] == "user" and "depth 9 does not fit" in reply["message"]

    def fake_run(cmd, **kwargs):  # the parent's side, without starting an interpreter
        Path(cmd[3] + ".reply").write_text(json.dumps(reply))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(UserError, match="depth 9 does not fit"):
        bench._bench_isolated(tuple(args))

    def crash(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, -9, "", "Killed\n")

    monkeypatch.setattr(subprocess, "run", crash)
    with pytest.raises(RuntimeError, match="ended without a result .*Killed"):
        bench._bench_isolated(tuple(args))


@pytest.mark.parametrize("kwargs, match", [
    ({"models": []}, "at least one model"),
    ({"models": ["resnet20_cifarr"]}, "unknown model 'resnet20_cifarr'"),
    ({"models": ["resnet20_cifar+sbb"]}, "'sbb' after '\\+' is not an attention block; did you mean sb"),
    ({"models": ["resnet20_cifar"], "batch_size": 0}, "batch_size must be at least 1"),
    ({"models": ["resnet20_cifar"], "steps": 0}, "steps must be at least 1"),
    ({"models": ["resnet20_cifar"], "warmup": -1}, "warmup must be at least 0"),
    ({"models": ["resnet20_cifar"], "img_size": 0}, "img_size must be at least 1"),
    ({"models": ["resnet20_cifar"], "device": "tpu"}, "device 'tpu' is not valid"),
    ({"models": ["resnet20_cifar"], "device": "cuda:0"} , "CUDA|cpu"),
])
def test_bad_input(kwargs, match):
    import torch

    if kwargs.get("device") == "cuda:0" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(UserError, match=match):
        benchmark(**kwargs)


def test_inserted_blocks_are_measured_against_the_bare_host():
    rows = benchmark(["resnet_cifar+se"], batch_size=4, img_size=16, steps=1, warmup=0,
                     model_kwargs={"depth": 8}, isolate=False)
    assert [r["model"] for r in rows] == ["resnet_cifar", "resnet_cifar+se"]  # the host is added
    host, row = rows
    ins = row["inserted"]
    assert ins["host"] == "resnet_cifar" and ins["block"] == "se" and "inserted" not in host
    assert ins["params"] == row["params"] - host["params"] > 0
    assert ins["train_img_per_s_ratio"] == row["train_img_per_s"] / host["train_img_per_s"]
    assert "- resnet_cifar+se: +" in format_table(rows) and "train img/s" in format_table(rows)

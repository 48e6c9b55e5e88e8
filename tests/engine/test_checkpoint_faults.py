"""Degenerate or foreign weight files and checkpoints that do not fit the run: one line, exit 2,
saying what differs; no pickled code ever runs."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from attnzoo.cli import main

from ..test_cli import TINY, one_line_error


class _Payload:
    def __reduce__(self):  # would create a file if unpickled with code execution
        return (os.mkdir, ("/tmp/attnzoo-pickle-payload-ran",))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--name", "t", "--out-dir", str(out), "--quiet", *TINY]) == 0
    return out / "t"


def _write(path, kind):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": _Payload()}))
    elif kind == "list":
        torch.save([torch.zeros(1)], path)
    elif kind == "bad-metadata":
        save_file({"w": torch.zeros(1)}, str(path), metadata={"attnzoo_config": "{not json"})
    elif kind == "list-metadata":
        save_file({"w": torch.zeros(1)}, str(path), metadata={"attnzoo_config": "[1, 2]"})
    return path


DEGENERATE = [("x.pt", "empty", "the file is empty or cut short"),
              ("x.safetensors", "empty", "not a readable safetensors file"),
              ("x.pt", "text", "not a torch or safetensors weight file"),
              ("x.pt", "pickle", "pickled Python objects other than tensors, which attnzoo never runs"),
              ("x.pt", "list", "holds no 'model' state"),
              ("x.safetensors", "bad-metadata", "attnzoo_config metadata is not a JSON mapping"),
              ("x.safetensors", "list-metadata", "attnzoo_config metadata is not a JSON mapping")]


@pytest.mark.parametrize("name, kind, expected", DEGENERATE, ids=[f"{n}-{k}" for n, k, _ in DEGENERATE])
def test_eval_of_a_degenerate_file(capsys, tmp_path, name, kind, expected):
    one_line_error(capsys, ["eval", "--checkpoint", str(_write(tmp_path / name, kind))], expected)
    assert not os.path.exists("/tmp/attnzoo-pickle-payload-ran")


@pytest.mark.parametrize("kind, expected", [("empty", "the file is empty or cut short"),
                                            ("pickle", "attnzoo never runs"),
                                            ("list", "not an attnzoo training state")])
def test_resume_from_a_degenerate_file(capsys, tmp_path, kind, expected):
    path = _write(tmp_path / "last.pt", kind)
    one_line_error(capsys, ["train", "--resume", str(path), "--out-dir", str(tmp_path), *TINY], expected)


def test_a_folder_as_checkpoint(capsys, tmp_path):
    one_line_error(capsys, ["eval", "--checkpoint", str(tmp_path)], "does not exist")
    one_line_error(capsys, ["train", "--resume", str(tmp_path), "--out-dir", str(tmp_path / "o"), *TINY],
                   "no such checkpoint file")


@pytest.mark.parametrize("change, expected", [
    (["--set", "model.kwargs.depth=14"], "this run: model.kwargs.depth 8 in the checkpoint, 14 now (a resumed"),
    (["--set", "model.name=resnet20_cifar"], "model.name 'resnet_cifar' in the checkpoint, 'resnet20_cifar' now"),
    (["--set", "data.options.num_classes=4"], "model.kwargs.num_classes=10 disagrees with the 4 classes"),
    (["--set", "optim.name=adamw"], "optim.name 'sgd' in the checkpoint, 'adamw' now"),
    (["--set", "optim.decay_norm_and_bias=false"], "optim.decay_norm_and_bias True in the checkpoint, False now"),
    (["--set", "schedule.name=onecycle"], "schedule.name 'cosine' in the checkpoint, 'onecycle' now"),
])
def test_resume_checks_the_checkpoint_against_the_config(capsys, tmp_path, run, change, expected):
    argv = ["train", "--resume", str(run / "checkpoints" / "last.pt"), "--out-dir", str(tmp_path),
            "--quiet", *TINY, *change]
    err = one_line_error(capsys, argv, expected)
    assert "cannot continue this run" in err or "disagrees" in err
    assert not (tmp_path / "default" / "config.yaml").exists()


def test_resume_with_weights_only_says_how_to_start_from_them(capsys, tmp_path, run):
    argv = ["train", "--resume", str(run / "checkpoints" / "best.safetensors"), "--out-dir", str(tmp_path), *TINY]
    one_line_error(capsys, argv, "holds weights only, no training state to continue")


def test_resume_of_the_same_config_still_works(tmp_path, run):
    argv = ["train", "--resume", str(run / "checkpoints" / "last.pt"), "--out-dir", str(tmp_path),
            "--quiet", *TINY, "--epochs", "2"]
    assert main(argv) == 0
    assert '"epoch": 2' in (tmp_path / "default" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("kind, expected", [("text", "not a torch or safetensors weight file"),
                                            ("pickle", "attnzoo never runs"),
                                            ("run", "shape mismatches")])
def test_pretrained_timm_weights_that_cannot_be_loaded(capsys, tmp_path, run, kind, expected):
    path = (run / "checkpoints" / "best.safetensors") if kind == "run" else _write(tmp_path / "w.pth", kind)
    argv = ["train", "--model", "test_resnet", "--pretrained", str(path), "--out-dir", str(tmp_path), *TINY[4:]]
    err = one_line_error(capsys, argv, expected)
    assert "pretrained" in err  # names what failed: the pretrained file or weights
    assert not os.path.exists("/tmp/attnzoo-pickle-payload-ran")

"""File-system faults end the command with one line and exit status 2, checked before the work
where they can be, and never cost the last good checkpoint."""
import errno
import os
import tempfile
import warnings

import pytest

from attnzoo.cli import main
from attnzoo.engine import checkpoint as ckpt
from attnzoo.errors import UserError

from .test_cli import TINY, one_line_error


def _refuse_writes_under(monkeypatch, folder, code=errno.EACCES):
    """What a read-only folder does, also for root (which ignores permission bits)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(folder)):
            raise OSError(code, os.strerror(code), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("out_dir", ["FILE", "/dev/null"])
def test_train_out_dir_that_is_no_folder(capsys, tmp_path, out_dir):
    (tmp_path / "FILE").write_text("x")
    out = str(tmp_path / out_dir) if out_dir == "FILE" else out_dir
    one_line_error(capsys, ["train", "--out-dir", out, *TINY], out, "folder")


def test_unwritable_out_dir_is_refused_before_the_data_is_built(capsys, tmp_path, monkeypatch):
    import attnzoo.engine.train as T

    monkeypatch.setattr(T, "build_data", lambda *a, **k: pytest.fail("data built before the check"))
    _refuse_writes_under(monkeypatch, tmp_path / "ro")
    one_line_error(capsys, ["train", "--out-dir", str(tmp_path / "ro"), *TINY], str(tmp_path / "ro"), "permission")


def test_a_name_too_long_for_the_file_system(capsys, tmp_path):
    one_line_error(capsys, ["train", "--out-dir", str(tmp_path), "--name", "n" * 300, *TINY],
                   "n" * 300, "too long")


def test_full_disk_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    last = tmp_path / "t" / "checkpoints" / "last.pt"
    real = os.fsync

    def fsync(fd):  # the disk fills up once the first checkpoint is on it
        if last.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    argv = ["train", "--name", "t", "--out-dir", str(tmp_path), "--quiet", *TINY, "--epochs", "2"]
    one_line_error(capsys, argv, "disk is full")
    assert ckpt.load_training_state(last)["progress"]["step"] == 0  # the first: before the first step
    assert not list(last.parent.glob("*.tmp")) and not list(last.parent.glob(".*.tmp"))


@pytest.fixture(scope="module")
def best(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--name", "t", "--out-dir", str(out), "--quiet", *TINY]) == 0
    return out / "t" / "checkpoints" / "best.safetensors"


COMMANDS = {"eval": ["eval", "--checkpoint", "BEST", "--out"],
            "bench": ["bench", "--models", "resnet20_cifar", "--json"],
            "analyze": ["analyze", "--checkpoint", "BEST", "--out-dir"]}
# (command, output path under tmp_path, a word the error must have besides the path)
BAD_OUTPUTS = [(command, target, expected) for command in COMMANDS for target, expected in [
    ("file/x" if command != "analyze" else "file", "folder"),
    ("folder" if command != "analyze" else "file/x", "folder" if command == "analyze" else "file name"),
    ("read-only/x", "permission")]]


@pytest.mark.parametrize("command, target, expected", BAD_OUTPUTS)
def test_output_paths_are_checked_before_the_work(capsys, tmp_path, monkeypatch, best, command, target,
                                                  expected):
    import attnzoo.analysis as analysis
    import attnzoo.commands.bench as bench
    import attnzoo.engine.evaluate as evaluate

    for module, name in [(evaluate, "evaluate_checkpoint"), (bench, "benchmark"), (analysis, "run_analysis")]:
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("work done before the check"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "read-only").mkdir()
    _refuse_writes_under(monkeypatch, tmp_path / "read-only")
    argv = [str(best) if a == "BEST" else a for a in COMMANDS[command]]
    one_line_error(capsys, argv + [str(tmp_path / target)], str(tmp_path / target).split("/x")[0], expected)


def test_a_recipe_that_is_a_folder(capsys, tmp_path):
    one_line_error(capsys, ["train", str(tmp_path)], str(tmp_path), "folder", "recipe")


def test_os_errors_from_anywhere_become_one_line(capsys, monkeypatch):
    import attnzoo.cli as cli

    def models(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/some/file")

    monkeypatch.setitem(cli.COMMANDS, "models", models)
    one_line_error(capsys, ["models"], "/some/file", "Permission denied")


# ---------------------------------------------------------------- input files of every kind

def _bad_file(tmp_path, kind: str, suffix: str):
    path = tmp_path / f"bad{suffix}"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("weights: none\n")
    elif kind == "truncated":
        import torch
        from safetensors.torch import save

        path.write_bytes(save({"w": torch.zeros(64)})[:-40])
    return path


@pytest.mark.parametrize("kind, suffix", [("folder", ".pt"), ("empty", ".pt"), ("text", ".pth"),
                                          ("truncated", ".safetensors"), ("missing", ".safetensors")])
def test_a_pretrained_file_that_holds_no_weights(capsys, tmp_path, kind, suffix):
    path = _bad_file(tmp_path, kind, suffix)
    one_line_error(capsys, ["train", "--out-dir", str(tmp_path / "runs"), *TINY, "--pretrained", str(path)],
                   str(path))
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # nothing of a run left


@pytest.mark.parametrize("command", ["eval", "analyze"])
@pytest.mark.parametrize("kind, suffix", [("folder", ".safetensors"), ("empty", ".pt"), ("text", ".pt"),
                                          ("truncated", ".safetensors")])
def test_a_checkpoint_that_holds_no_weights(capsys, tmp_path, command, kind, suffix):
    path = _bad_file(tmp_path, kind, suffix)
    one_line_error(capsys, [command, "--checkpoint", str(path)], str(path))


# ---------------------------------------------------------------- warnings beside errors

def _warn_then(outcome):
    def command(args):
        warnings.warn("skipping unreadable image x.jpg (cannot identify image file)", RuntimeWarning,
                      stacklevel=1)
        if outcome == "error":
            raise UserError("every one of the 4 training images was unreadable")
        return 0
    return command


def test_a_warning_followed_by_its_error_is_one_line(capsys, monkeypatch):
    import attnzoo.cli as cli

    monkeypatch.setitem(cli.COMMANDS, "models", _warn_then("error"))
    one_line_error(capsys, ["models"], "every one of the 4 training images was unreadable")


def test_a_warning_of_a_command_that_goes_on_is_one_line(capsys, monkeypatch):
    import attnzoo.cli as cli

    monkeypatch.setitem(cli.COMMANDS, "models", _warn_then("success"))
    assert main(["models"]) == 0
    assert capsys.readouterr().err == "attnzoo: warning: skipping unreadable image x.jpg (cannot identify image file)\n"


def test_an_image_folder_of_unreadable_images_is_one_line(capsys, tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / "0.jpg").write_bytes(b"not a jpeg")
    one_line_error(capsys, ["train", "--out-dir", str(tmp_path / "runs"), "--data", "imagefolder",
                            "--data-dir", str(tmp_path), "--set", "data.img_size=16", "--batch-size", "2",
                            "--set", "data.workers=0", "--epochs", "1", "--device", "cpu",
                            "--model", "resnet_cifar", "--set", "model.kwargs.depth=8"],
                   "unreadable", "2 training images")


@pytest.mark.parametrize("content, facts", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ("r.yaml", "YAML")),   # binary, not text
    (b"42\n", ("r.yaml", "mapping", "model, data")),                 # a scalar
    (b"- model\n- data\n", ("r.yaml", "mapping")),                    # a list
    (b"modle: {name: resnet18}\n", ("modle", "'model'")),            # a misspelt section
    (b"model: resnet18\n", ("model", "mapping", "name")),            # a section that is no mapping
    (b"data: {batch_size: many}\n", ("data.batch_size", "integer", "many")),
])
def test_recipe_files_of_every_kind(capsys, tmp_path, content, facts):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(content)
    one_line_error(capsys, ["train", str(recipe), "--out-dir", str(tmp_path / "runs")], *facts)
    assert not (tmp_path / "runs").exists()


def test_an_empty_recipe_is_the_defaults(tmp_path):
    from attnzoo.engine.config import Config, config_to_dict, load_config

    (tmp_path / "empty.yaml").write_bytes(b"")
    assert config_to_dict(load_config(str(tmp_path / "empty.yaml"))) == config_to_dict(Config())

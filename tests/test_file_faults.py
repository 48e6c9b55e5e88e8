"""File-system faults end the command with one line and exit status 2, checked before the work
where they can be, and never cost the last good checkpoint."""
import errno
import os
import tempfile

import pytest

from attnzoo.cli import main
from attnzoo.engine import checkpoint as ckpt

from .test_cli import TINY, one_line_error


def _refuse_writes_under(monkeypatch, folder, code=errno.EACCES):
    """What a read-only folder does, also for root (which ignores permission bits)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(folder)):
            raise OSError(code, os.strerror(code), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("out_dir, expected", [
    ("FILE", "a file stands where a folder is needed"),
    ("/dev/null", "a file stands where a folder is needed"),
])
def test_train_out_dir_that_is_no_folder(capsys, tmp_path, out_dir, expected):
    (tmp_path / "FILE").write_text("x")
    out = str(tmp_path / out_dir) if out_dir == "FILE" else out_dir
    one_line_error(capsys, ["train", "--out-dir", out, *TINY], expected)


def test_unwritable_out_dir_is_refused_before_the_data_is_built(capsys, tmp_path, monkeypatch):
    import attnzoo.engine.train as T

    monkeypatch.setattr(T, "build_data", lambda *a, **k: pytest.fail("data built before the check"))
    _refuse_writes_under(monkeypatch, tmp_path / "ro")
    one_line_error(capsys, ["train", "--out-dir", str(tmp_path / "ro"), *TINY], "no permission")


def test_a_name_too_long_for_the_file_system(capsys, tmp_path):
    one_line_error(capsys, ["train", "--out-dir", str(tmp_path), "--name", "n" * 300, *TINY],
                   "too long for the file system")


def test_full_disk_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    last = tmp_path / "t" / "checkpoints" / "last.pt"
    real = os.fsync

    def fsync(fd):  # the disk fills up once the first checkpoint is on it
        if last.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    argv = ["train", "--name", "t", "--out-dir", str(tmp_path), "--quiet", *TINY, "--epochs", "2"]
    one_line_error(capsys, argv, "the disk is full")
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
BAD_OUTPUTS = [(command, target, expected) for command in COMMANDS for target, expected in [
    ("file/x" if command != "analyze" else "file", "a file stands where a folder is needed"
     if command != "analyze" else "is a file, not a folder"),
    ("folder" if command != "analyze" else "file/x", "is a folder; give a file name"
     if command != "analyze" else "a file stands where a folder is needed"),
    ("read-only/x", "no permission")]]


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
    one_line_error(capsys, argv + [str(tmp_path / target)], expected)


def test_a_recipe_that_is_a_folder(capsys, tmp_path):
    one_line_error(capsys, ["train", str(tmp_path)], "is a folder; give a recipe YAML file")


def test_os_errors_from_anywhere_become_one_line(capsys, monkeypatch):
    import attnzoo.cli as cli

    def models(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/some/file")

    monkeypatch.setitem(cli.COMMANDS, "models", models)
    one_line_error(capsys, ["models"], "/some/file: Permission denied (no permission")

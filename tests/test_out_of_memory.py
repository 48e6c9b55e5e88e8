"""A batch or image size that does not fit in memory is one line naming the size asked for and a
smaller one to try (torch's out-of-memory error is simulated, nothing large is allocated)."""
import pytest
import torch

from .test_cli import TINY, one_line_error


def _out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def _cpu_out_of_memory(*args, **kwargs):  # what the CPU allocator raises
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")


@pytest.mark.parametrize("where", ["train_one_epoch", "build_data"])
@pytest.mark.parametrize("error", [_out_of_memory, _cpu_out_of_memory])
def test_train_out_of_memory(capsys, tmp_path, monkeypatch, where, error):
    import attnzoo.engine.train as T

    monkeypatch.setattr(T, where, error)
    # the image size is known once the data is built (32 px: synthetic's native size)
    expected = ("out of memory at batch size 16 and image size 32 px; try --batch-size 8 or a smaller "
                "image size (16 px)" if where == "train_one_epoch" else
                "out of memory at batch size 16; try --batch-size 8")
    one_line_error(capsys, ["train", "--out-dir", str(tmp_path), *TINY], expected)


def test_other_runtime_errors_are_not_mistaken_for_memory(tmp_path, monkeypatch):
    import attnzoo.engine.train as T
    from attnzoo.cli import main

    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(T, "train_one_epoch", bug)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        main(["train", "--out-dir", str(tmp_path), *TINY])


@pytest.mark.parametrize("argv, expected", [
    (["--batch-size", "64", "--img-size", "224"], "out of memory at batch size 64 and image size 224 px; "
                                                   "try --batch-size 32"),
    (["--batch-size", "1", "--img-size", "512"], "at batch size 1 and image size 512 px; try a smaller "
                                                 "image size (256 px)"),
])
def test_bench_out_of_memory(capsys, monkeypatch, argv, expected):
    import attnzoo.commands.bench as bench

    monkeypatch.setattr(bench, "benchmark", _out_of_memory)
    one_line_error(capsys, ["bench", "--models", "resnet20_cifar", *argv], expected)

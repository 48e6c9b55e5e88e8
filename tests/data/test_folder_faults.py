"""Image folders that cannot train: every image unreadable (a run with no training step is an
error, not an untrained 'completed' run) and a class folder without images."""
from PIL import Image

from attnzoo.cli import main

from ..test_cli import one_line_error

ARGS = ["--data", "imagefolder", "--set", "data.img_size=16", "--set", "data.workers=0", "--batch-size", "2",
        "--epochs", "1", "--device", "cpu", "--set", "model.name=resnet_cifar", "--set", "model.kwargs.depth=8"]


def _folder(root, unreadable_train=False, empty_class=False):
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(2):
                if split == "train" and unreadable_train:
                    (d / f"{i}.jpg").write_bytes(b"not a jpeg")
                else:
                    Image.new("RGB", (16, 16), (80 * i, 40, 9)).save(d / f"{i}.jpg")
    if empty_class:
        (root / "train" / "bird").mkdir()
    return root


def test_every_training_image_unreadable_is_an_error_not_a_finished_run(capsys, tmp_path):
    data = _folder(tmp_path / "data", unreadable_train=True)
    # one line: the warning about the first unreadable image gives way to the error (attnzoo.cli)
    one_line_error(capsys, ["train", "--data-dir", str(data), "--out-dir", str(tmp_path / "runs"), *ARGS],
                   "epoch 1 ran no training step: every one of the 4 training images was unreadable")
    assert not (tmp_path / "runs" / "default" / "checkpoints" / "best.safetensors").exists()


def test_an_empty_class_folder_is_named(capsys, tmp_path):
    data = _folder(tmp_path / "data", empty_class=True)
    one_line_error(capsys, ["train", "--data-dir", str(data), "--out-dir", str(tmp_path / "runs"), *ARGS],
                   "class folder(s) of " + str(data / "train") + " without images: bird")


def test_a_readable_folder_still_trains(tmp_path):
    data = _folder(tmp_path / "data")
    assert main(["train", "--data-dir", str(data), "--out-dir", str(tmp_path / "runs"), "--quiet", *ARGS]) == 0

import pickle

import numpy as np
import pytest
import torch

from attnzoo.data import build_data
from attnzoo.engine.config import DataConfig
from attnzoo.errors import UserError


def _write_batch(path, n, seed, labels_key="labels", extra=None):
    rng = np.random.default_rng(seed)
    entry = {"batch_label": "testing batch", "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             labels_key: rng.integers(0, 10, n).tolist(), "filenames": [f"img_{i}.png" for i in range(n)]}
    entry.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    return entry


def write_cifar10(root, n=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    entries = [_write_batch(folder / f"data_batch_{i}", n, i) for i in range(1, 6)]
    test = _write_batch(folder / "test_batch", n, 99)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f, protocol=2)
    return entries, test


def test_cifar10_round_trip(tmp_path):
    entries, test = write_cifar10(tmp_path)
    b = build_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert b.num_classes == 10 and b.img_size == 32 and b.class_names[3] == "class3"
    assert b.train.images.shape == (20, 3, 32, 32) and b.train.images.dtype == torch.uint8
    first = torch.from_numpy(entries[0]["data"][1].reshape(3, 32, 32))
    assert torch.equal(b.train.images[1], first)
    assert b.train.targets.tolist()[:4] == entries[0]["labels"]
    assert torch.equal(b.evals["test"].targets, torch.tensor(test["labels"]))
    evaluation_only = build_data(DataConfig(name="cifar10", root=str(tmp_path)), train=False)
    assert evaluation_only.train is None and len(evaluation_only.evals["test"]) == 4


def test_cifar100_round_trip(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    tr = _write_batch(folder / "train", 6, 1, "fine_labels", {"coarse_labels": [0] * 6})
    _write_batch(folder / "test", 3, 2, "fine_labels", {"coarse_labels": [0] * 3})
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["x"] * 20}, f)
    b = build_data(DataConfig(name="cifar100", root=str(tmp_path), img_size=40))
    assert b.num_classes == 100 and b.img_size == 40 and len(b.train) == 6 and len(b.evals["test"]) == 3
    assert b.train.targets.tolist() == tr["fine_labels"]


def test_cifar_missing(tmp_path):
    with pytest.raises(UserError) as e:
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))
    msg = str(e.value)
    assert "CIFAR-10 not found under" in msg and "data_batch_1..5" in msg and "data.download=true" in msg
    assert "\n" not in msg


def test_cifar_malformed(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="data_batch_3 is malformed"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))


def test_cifar_pickle_with_code_is_refused(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))


def test_cifar_wrong_shape(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(UserError, match=r"test_batch.*'data' uint8"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))


def write_stl10(root, n_train=3, n_test=2):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        hwc = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        # torchvision's format: per image, per channel, column-major (N, C, W, H)
        hwc.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        labels = rng.integers(1, 11, n, dtype=np.uint8)
        labels.tofile(folder / f"{split}_y.bin")
        out[split] = (hwc, labels)
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n")
    return out


def test_stl10_round_trip(tmp_path):
    written = write_stl10(tmp_path)
    b = build_data(DataConfig(name="stl10", root=str(tmp_path)))
    assert b.img_size == 96 and b.num_classes == 10 and b.class_names[0] == "k0"
    hwc, labels = written["train"]
    assert b.train.images.shape == (3, 3, 96, 96)
    assert torch.equal(b.train.images.permute(0, 2, 3, 1), torch.from_numpy(hwc))
    assert b.train.targets.tolist() == (labels.astype(int) - 1).tolist()
    assert len(b.evals["test"]) == 2


def test_stl10_missing_and_malformed(tmp_path):
    with pytest.raises(UserError, match="STL-10.*train_X.bin"):
        build_data(DataConfig(name="stl10", root=str(tmp_path)))
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(b"\x00" * 1000)
    with pytest.raises(UserError, match="test_X.bin is malformed"):
        build_data(DataConfig(name="stl10", root=str(tmp_path)))


def test_real_datasets_take_no_options(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(UserError, match="no options.*num_train"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path), options={"num_train": 5}))

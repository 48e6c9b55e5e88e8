"""CIFAR-10, CIFAR-100 and STL-10 from torchvision's on-disk formats, held in memory as uint8.

Layout under `root` (`data.root`, `--data-dir`; default ./data):
- CIFAR-10: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
- CIFAR-100: root/cifar-100-python/{train, test, meta}
- STL-10: root/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt}
  (train 5,000 / test 8,000 labelled images at 96x96; the unlabelled split is not used)

The CIFAR "python version" files are pickles; they are read with an unpickler that accepts only
plain containers and numpy arrays, so a file from elsewhere cannot run code. torchvision downloads
the archives only when `data.download` is true. Normalisation constants are those of the LSAS seed's
framework (bearpaw/pytorch-classification), used there for all three datasets.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from ..constants import CIFAR_MEAN as MEAN
from ..constants import CIFAR_STD as STD
from ..errors import UserError
from .memory import InMemoryDataset

CIFAR = {
    "cifar10": {"title": "CIFAR-10", "folder": "cifar-10-batches-py", "classes": 10,
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta", "names_key": "label_names", "labels_key": "labels",
                "tv": "CIFAR10"},
    "cifar100": {"title": "CIFAR-100", "folder": "cifar-100-python", "classes": 100,
                 "train": ["train"], "test": ["test"], "meta": "meta", "names_key": "fine_label_names",
                 "labels_key": "fine_labels", "tv": "CIFAR100"},
}

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles containers, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return _SafeUnpickler(f, encoding="latin1").load()


def default_root(cfg) -> Path:
    return Path(cfg.root) if cfg.root else Path("data")


def _how_to_get(name: str) -> str:
    version = "the binary version" if name == "stl10" else "the python version"
    return f"pass --set data.download=true when online, or copy {version} there"


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    try:
        if name == "stl10":
            tvd.STL10(str(root), split="train", download=True)
        else:
            getattr(tvd, CIFAR[name]["tv"])(str(root), train=True, download=True)
    except Exception as e:  # noqa: BLE001  (network errors of every kind)
        title = "STL-10" if name == "stl10" else CIFAR[name]["title"]
        raise UserError(f"{title} download into {root} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        f"copy the dataset there by hand when offline") from None


# ------------------------------------------------------------------------------------------ CIFAR

def _cifar_files(name: str, root: Path, splits) -> list[Path]:
    spec = CIFAR[name]
    folder = root / spec["folder"]
    return [folder / f for s in splits for f in spec[s]] + [folder / spec["meta"]]


def _load_cifar_split(name: str, root: Path, split: str) -> InMemoryDataset:
    spec = CIFAR[name]
    folder = root / spec["folder"]
    images, labels = [], []
    for fname in spec[split]:
        path = folder / fname
        try:
            entry = read_pickle(path)
            data = np.asarray(entry["data"])
            lab = entry[spec["labels_key"]]
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(lab) != data.shape[0]:
                raise ValueError(f"expected 'data' uint8 (N, 3072) and N '{spec['labels_key']}', got "
                                 f"{data.dtype} {data.shape} and {len(lab)} labels")
            lab = np.asarray(lab, dtype=np.int64)
            if lab.size and (lab.min() < 0 or lab.max() >= spec["classes"]):
                raise ValueError(f"labels outside 0..{spec['classes'] - 1}")
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError,
                ImportError, IndexError, OSError) as e:
            why = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{spec['title']} file {path} is malformed ({why}); delete {folder} and "
                            f"{_how_to_get(name)}") from None
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(lab))
    return InMemoryDataset(torch.cat(images), torch.cat(labels), name=f"{name}/{split}")


def _cifar_class_names(name: str, root: Path) -> list[str]:
    spec = CIFAR[name]
    path = root / spec["folder"] / spec["meta"]
    try:
        names = [str(n) for n in read_pickle(path)[spec["names_key"]]]
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, OSError) as e:
        raise UserError(f"{spec['title']} file {path} is malformed ({type(e).__name__}: {e}); delete "
                        f"{path.parent} and {_how_to_get(name)}") from None
    if len(names) != spec["classes"]:
        raise UserError(f"{spec['title']} file {path} is malformed (lists {len(names)} class names, expected "
                        f"{spec['classes']}); delete {path.parent} and {_how_to_get(name)}")
    return names


def build_cifar(cfg, train: bool, name: str):
    from .bundle import DataBundle

    spec = CIFAR[name]
    root = default_root(cfg)
    splits = ("train", "test") if train else ("test",)
    missing = [p for p in _cifar_files(name, root, splits) if not p.is_file()]
    if missing and cfg.download:
        _download(name, root)
        missing = [p for p in _cifar_files(name, root, splits) if not p.is_file()]
    if missing:
        folder = root / spec["folder"]
        expected = ", ".join(spec["train"] + spec["test"] + [spec["meta"]])
        if name == "cifar10":
            expected = "data_batch_1..5, test_batch, batches.meta"
        raise UserError(f"{spec['title']} not found under {root}: expected {folder}/{{{expected}}} "
                        f"({missing[0].name} is missing); {_how_to_get(name)}")
    train_set = _load_cifar_split(name, root, "train") if train else None
    test_set = _load_cifar_split(name, root, "test")
    return DataBundle(train=train_set, evals={"test": test_set}, num_classes=spec["classes"], multilabel=False,
                      img_size=cfg.img_size or 32, mean=MEAN, std=STD,
                      class_names=_cifar_class_names(name, root))


# ------------------------------------------------------------------------------------------ STL-10

STL_SIZE = 96
STL_COUNTS = {"train": 5000, "test": 8000}


def _load_stl_split(root: Path, split: str) -> InMemoryDataset:
    folder = root / "stl10_binary"
    xp, yp = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    x = np.fromfile(xp, dtype=np.uint8)
    y = np.fromfile(yp, dtype=np.uint8)
    per = 3 * STL_SIZE * STL_SIZE
    if x.size == 0 or x.size % per:
        raise UserError(f"STL-10 file {xp} is malformed (size {x.size} bytes is not a positive multiple of "
                        f"3x96x96); delete {folder} and {_how_to_get('stl10')}")
    n = x.size // per
    if y.size != n or y.min() < 1 or y.max() > 10:
        raise UserError(f"STL-10 file {yp} is malformed (expected {n} labels in 1..10, found {y.size}); "
                        f"delete {folder} and {_how_to_get('stl10')}")
    # stored column-major per channel: (N, C, W, H) -> (N, C, H, W)
    images = torch.from_numpy(x.reshape(n, 3, STL_SIZE, STL_SIZE)).transpose(2, 3).contiguous()
    return InMemoryDataset(images, torch.from_numpy(y.astype(np.int64) - 1), name=f"stl10/{split}")


def build_stl10(cfg, train: bool):
    from .bundle import DataBundle

    root = default_root(cfg)
    folder = root / "stl10_binary"
    splits = ("train", "test") if train else ("test",)
    needed = [folder / f"{s}_{k}.bin" for s in splits for k in ("X", "y")]
    if any(not p.is_file() for p in needed) and cfg.download:
        _download("stl10", root)
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise UserError(f"STL-10 not found under {root}: expected {folder}/{{train_X.bin, train_y.bin, test_X.bin, "
                        f"test_y.bin}} ({missing[0].name} is missing); {_how_to_get('stl10')}")
    train_set = _load_stl_split(root, "train") if train else None
    test_set = _load_stl_split(root, "test")
    names_file = folder / "class_names.txt"
    names = names_file.read_text().split() if names_file.is_file() else []
    if len(names) != 10:
        names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    return DataBundle(train=train_set, evals={"test": test_set}, num_classes=10, multilabel=False,
                      img_size=cfg.img_size or STL_SIZE, mean=MEAN, std=STD, class_names=names)

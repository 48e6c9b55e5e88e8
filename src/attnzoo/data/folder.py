"""ImageNet-style image folders: root/train/<class>/*.jpg and root/val/<class>/*.jpg.

Images are read one by one with PIL and transformed per image (`image_transform`); classes are the
sorted sub-folders of train/ (of val/ when only evaluating). Files that PIL cannot decode
(truncated, corrupt, not an image) are skipped by the loader and counted, never crash a run.
`imagenet` is the same loader with ImageNet's conventions (224 px by default).
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..errors import UserError
from .transforms import image_transform

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderDataset(Dataset):
    """Samples (path, class index) of one split; item -> (uint8 image (3, S, S), int)."""

    def __init__(self, samples: list, classes: list, transform, name: str = ""):
        self.samples = samples
        self.classes = classes
        self.transform = transform
        self.name = name
        self.targets = [t for _, t in samples]
        self.num_skipped = 0  # distinct unreadable files met by the loaders (set by them)
        self.skipped_paths: dict = {}

    def __len__(self) -> int:
        return len(self.samples)

    def path_of(self, index: int) -> str:
        return str(self.samples[index][0])

    @staticmethod
    def is_unreadable(exc: Exception) -> bool:
        """Decoding errors that mean 'skip this file' (PIL raises several kinds)."""
        from PIL import Image

        return isinstance(exc, (OSError, SyntaxError, ValueError, Image.DecompressionBombError))

    def __getitem__(self, index: int):
        from PIL import Image

        path, target = self.samples[index]
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: a truncated file fails here
        return self.transform(img), target

    def __repr__(self) -> str:
        return f"ImageFolderDataset({self.name!r}, {len(self)} images, {len(self.classes)} classes)"


def _scan(split_dir: Path, classes: list) -> list:
    samples = []
    for ci, c in enumerate(classes):
        d = split_dir / c
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS:
                samples.append((p, ci))
    return samples


def _how(root: Path) -> str:
    return (f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image> "
            f"(one sub-folder per class, images {', '.join(e[1:] for e in IMG_EXTENSIONS[:3])}, ...)")


def build_folder(cfg, train: bool, name: str = "imagefolder"):
    from .bundle import DataBundle

    title = "ImageNet" if name == "imagenet" else "image folder"
    if not cfg.root:
        raise UserError(f"{name}: no data folder given; pass --data-dir DIR (data.root) where {_how(Path('DIR'))}")
    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(f"{title} not found: {root} does not exist; {_how(root)}")
    train_dir, val_dir = root / "train", root / "val"
    needed = [train_dir, val_dir] if train else [val_dir]
    missing = [d for d in needed if not d.is_dir()]
    if missing:
        raise UserError(f"{title} under {root} is incomplete: {missing[0]} is missing; {_how(root)}")
    class_dir = train_dir if train else (train_dir if train_dir.is_dir() else val_dir)
    classes = sorted(d.name for d in class_dir.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise UserError(f"{title} under {root}: {class_dir} holds {len(classes)} class folder(s), need at least 2; "
                        f"{_how(root)}")
    val_classes = sorted(d.name for d in val_dir.iterdir() if d.is_dir())
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise UserError(f"{title} under {root}: val/ has class folders that train/ lacks ({', '.join(unknown[:5])}); "
                        f"both splits must use the same class names")
    size = cfg.img_size or 224
    train_set = None
    if train:
        samples = _scan(train_dir, classes)
        if not samples:
            raise UserError(f"{title} under {root}: no images in {train_dir}/<class>/; {_how(root)}")
        empty = sorted(set(classes) - {classes[t] for _, t in samples})
        if empty:  # it would become a class the network can never learn
            raise UserError(f"{title} under {root}: class folder(s) of {train_dir} without images: "
                            f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}; add images "
                            "or remove the folder")
        train_set = ImageFolderDataset(samples, classes, image_transform(cfg.augment, size, True), f"{name}/train")
    val_samples = _scan(val_dir, classes)
    if not val_samples:
        raise UserError(f"{title} under {root}: no images in {val_dir}/<class>/; {_how(root)}")
    val_set = ImageFolderDataset(val_samples, classes, image_transform(cfg.augment, size, False), f"{name}/val")
    return DataBundle(train=train_set, evals={"val": val_set}, num_classes=len(classes), multilabel=False,
                      img_size=size, class_names=classes)  # ImageNet's mean and std

"""Datasets and loaders: the embedded synthetic sets, CIFAR-10/100, STL-10, image folders
(ImageNet), COCO and VOC, behind two functions.

    bundle = build_data(cfg.data, train=True)       # DataBundle: splits + metadata
    loader = build_loader(bundle.train, bundle, cfg.data, train=True, seed=cfg.train.seed,
                          rank=rank, world_size=world_size)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, targets in loader: ...          # float32 NCHW, normalised, bundle.img_size

Datasets that fit in memory are held as uint8 tensors and augmented batch-wise; image folders
are read per image by DataLoader workers. See `loader.py` for order, sharding and how evaluation
results are reduced across processes.
"""
from __future__ import annotations

from ..errors import UserError, choices_hint
from .bundle import DataBundle
from .loader import FileLoader, InMemoryLoader, build_loader
from .memory import InMemoryDataset, Ragged
from .transforms import AUGMENTS, BatchAugment, Cutout, epoch_generator, image_transform

__all__ = ["dataset_names", "build_data", "build_loader", "DataBundle", "InMemoryDataset", "Ragged",
           "BatchAugment", "Cutout", "image_transform", "epoch_generator", "skipped_images",
           "InMemoryLoader", "FileLoader", "AUGMENTS"]

_DATASETS = ("synthetic", "synthetic_multilabel", "cifar10", "cifar100", "stl10", "imagefolder", "imagenet",
             "coco", "voc")


def dataset_names() -> list[str]:
    """Every name `data.name` accepts."""
    return list(_DATASETS)


def build_data(cfg, train: bool = True) -> DataBundle:
    """The DataBundle of dataset `cfg.name` (a DataConfig); `train=False` loads only the eval splits.

    A missing or malformed dataset, an unknown name or bad options raise `UserError`.
    """
    name = cfg.name
    if cfg.img_size is not None and cfg.img_size < 1:
        raise UserError(f"data.img_size must be positive, got {cfg.img_size}")
    if cfg.cutout < 0 or cfg.cutout_holes < 1:
        raise UserError(f"data.cutout must be >= 0 and data.cutout_holes >= 1, got {cfg.cutout} and {cfg.cutout_holes}")
    if name in ("synthetic", "synthetic_multilabel"):
        from . import synthetic

        return synthetic.build(cfg, train, multilabel=name == "synthetic_multilabel")
    if cfg.options and name not in ("coco", "voc"):
        raise UserError(f"data.options: dataset '{name}' takes no options, got {', '.join(sorted(cfg.options))}")
    if name in ("cifar10", "cifar100"):
        from .cifar import build_cifar

        return build_cifar(cfg, train, name)
    if name == "stl10":
        from .cifar import build_stl10

        return build_stl10(cfg, train)
    if name in ("imagefolder", "imagenet"):
        from .folder import build_folder

        return build_folder(cfg, train, name)
    if name == "coco":
        from . import coco

        return coco.build(cfg, train)
    if name == "voc":
        from . import voc

        return voc.build(cfg, train)
    raise UserError(f"unknown dataset '{name}'; {choices_hint(name, _DATASETS)}")


def skipped_images(*loaders) -> int:
    """Unreadable images skipped so far by these loaders (for `skipped_images` in the summary).

    Under DDP each rank counts only the files it read itself (the run summary reports rank 0's).
    """
    return sum(getattr(loader, "skipped_images", 0) for loader in loaders)

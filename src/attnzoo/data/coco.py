"""MS-COCO 2014 as a multi-label dataset (80 classes), read from the official files:

    root/annotations/instances_train2014.json   root/train2014/*.jpg
    root/annotations/instances_val2014.json     root/val2014/*.jpg

(`root/COCO2014/...`, the official IDA code's layout, is found too; `data.options.year: 2017`
reads the 2017 files the same way.) Every image listed in an annotation file is a sample, also
the few without any object (all-zero target), as in the official IDA/Q2L code; crowd annotations
count like the others. Category ids are mapped to indices 0..79 in sorted id order and
`class_names` follow that order. Boxes are kept per image for analysis (`dataset.boxes[i]`:
(K, 4) float (x0, y0, x1, y1) in pixels of the original image, `dataset.box_labels[i]`: (K,)
class indices, `dataset.image_sizes[i]`: (width, height)).

Images are read per image with PIL and resized to img_size x img_size (default 448, ignoring the
aspect ratio as the seed does). Train augmentation (`data.augment`): "none" resize only,
"crop_flip" resize + horizontal flip (no crop: a crop can cut labelled objects out),
"imagenet" RandomResizedCrop(scale 0.3-1) + flip; `data.options.randaugment` (a timm
RandAugment string such as "rand-m9-n2-mstd0.5", default off) adds RandAugment, as the seed's
pipeline. Cutout (`data.cutout`, `data.cutout_holes`) is applied by the loader to each batch
(the hole is filled with the mean colour, where the seed draws a random colour). Items are uint8
images (3, S, S), a quarter of float32's bytes through the workers and the copy to the device,
where the loader converts and normalises them; targets are float multi-hot (80,).

Mistakes a user can make raise `UserError` with one line: no root, a missing or unparsable
annotation file, a file that is not in COCO's instances format (also one nested too deep, or with a
size or box that is not a finite number), images named in the annotations but missing from the
image folder, train and val files with different categories.
"""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .bundle import DataBundle
from .memory import Ragged
from .transforms import ToRGB

DEFAULT_SIZE = 448
COCO_OPTIONS = ("year", "randaugment")


# ------------------------------------------------------------------------- shared with voc.py

class MultiLabelImages(Dataset):
    """Image files with multi-hot targets. item -> (uint8 image (3, S, S), target (C,)).

    `targets` (N, C) float32; `boxes`, `box_labels` (`Ragged`), `image_sizes` (N, 2) (w, h);
    `files` the image paths; `class_names`.
    """

    def __init__(self, files: list, targets: torch.Tensor, transform, class_names: list,
                 boxes: Ragged | None = None, box_labels: Ragged | None = None,
                 image_sizes: torch.Tensor | None = None, name: str = ""):
        self.files = np.asarray([str(f) for f in files])  # one array: no per-sample objects to copy
        self.targets = targets
        self.transform = transform
        self.class_names = class_names
        self.boxes, self.box_labels, self.image_sizes = boxes, box_labels, image_sizes
        self.name = name

    def __len__(self) -> int:
        return len(self.files)

    def path_of(self, index: int) -> str:
        return str(self.files[index])

    @staticmethod
    def is_unreadable(exc: Exception) -> bool:
        from PIL import Image

        return isinstance(exc, (OSError, SyntaxError, ValueError, Image.DecompressionBombError))

    def __getitem__(self, index: int):
        from PIL import Image

        with open(self.files[index], "rb") as f:
            img = Image.open(f)
            img.load()
        return self.transform(img), self.targets[index]

    def __repr__(self) -> str:
        return f"MultiLabelImages({self.name!r}, {len(self)} images, {len(self.class_names)} classes)"


class _SeededRandAugment:
    """timm RandAugment, its `random` and `numpy.random` draws seeded from torch's generator (which
    the loader seeds per sample), leaving both global states as they were."""

    def __init__(self, config: str):
        from timm.data.auto_augment import rand_augment_transform

        try:
            self.op = rand_augment_transform(config, {"translate_const": 100, "img_mean": (124, 116, 104)})
        except Exception as e:  # noqa: BLE001 - a malformed config string
            raise UserError(f"data.options.randaugment '{config}' is not a timm RandAugment string "
                            f"such as rand-m9-n2-mstd0.5 ({e})") from None
        self.config = config

    def __call__(self, img):
        state, np_state = random.getstate(), np.random.get_state()
        seed = int(torch.randint(0, 2 ** 31, (1,)))
        random.seed(seed)
        np.random.seed(seed)  # timm picks the operations with numpy
        try:
            return self.op(img)
        finally:
            random.setstate(state)
            np.random.set_state(np_state)

    def __repr__(self) -> str:
        return f"RandAugment({self.config!r})"


def multilabel_transform(img_size: int, train: bool, augment: str = "none", randaugment=None):
    """PIL image -> uint8 tensor (3, img_size, img_size) (see the module docstring)."""
    from torchvision import transforms as T

    ops = [ToRGB()]
    if train and augment == "imagenet":
        ops += [T.RandomResizedCrop(img_size, scale=(0.3, 1.0)), T.RandomHorizontalFlip()]
    else:
        ops.append(T.Resize((img_size, img_size)))
        if train and augment == "crop_flip":
            ops.append(T.RandomHorizontalFlip())
    if train and randaugment:
        ops.append(_SeededRandAugment(str(randaugment)))
    ops.append(T.PILToTensor())
    return T.Compose(ops)


def check_options(cfg, name: str, valid) -> dict:
    options = dict(cfg.options or {})
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UserError(f"data.options: {', '.join(bad)} not valid for dataset '{name}'; "
                        f"valid: {', '.join(valid)}")
    return options


def check_images(folder: Path, names: list, source: Path) -> None:
    """UserError when the folder is missing or lacks any of the named images."""
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist; {source} names {len(names)} images there")
    present = set(os.listdir(folder))
    missing = [n for n in names if n not in present]
    if missing:
        raise UserError(f"{len(missing)} of the {len(names)} images named in {source} are missing from "
                        f"{folder} (first: {missing[0]}); copy the complete image folder")


def pixel_size(value, what: str) -> int:
    """A width or height from an annotation file as an int; ValueError naming it unless it is a
    finite number >= 0 (1e999 parses as infinity)."""
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} {value} is not a finite number of pixels")
    return int(number)


# ----------------------------------------------------------------------------------- COCO

def read_coco(path: Path) -> dict:
    """Parse and check one instances_*.json: {'images': [(file_name, w, h)], 'categories':
    [(id, name)] sorted by id, 'labels': per image a list of category ids, 'boxes': per image a
    list of (x0, y0, x1, y1)}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"COCO annotation file {path} not found; expected the official "
                        f"{path.name} from annotations_trainval{path.stem[-4:]}.zip (cocodataset.org)")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"COCO annotation file {path} does not parse as JSON ({str(e).splitlines()[0][:120]})") from None
    except RecursionError:
        raise UserError(f"COCO annotation file {path} nests its JSON deeper than Python can read; "
                        "it is not a COCO instances file") from None
    try:
        if not isinstance(data, dict):
            raise TypeError("the top level is not an object")
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        if not categories:
            raise ValueError("no categories")
        images, index = [], {}
        for img in data["images"]:
            index[int(img["id"])] = len(images)
            images.append((str(img["file_name"]), pixel_size(img.get("width", 0), f"image {img['id']}: width"),
                           pixel_size(img.get("height", 0), f"image {img['id']}: height")))
        valid_ids = {c for c, _ in categories}
        labels = [[] for _ in images]
        boxes = [[] for _ in images]
        for ann in data["annotations"]:
            i = index[int(ann["image_id"])]
            cat = int(ann["category_id"])
            if cat not in valid_ids:
                raise ValueError(f"annotation {ann.get('id')} has category_id {cat}, not in 'categories'")
            x, y, w, h = (float(v) for v in ann["bbox"])
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise ValueError(f"annotation {ann.get('id')} has bbox {ann['bbox']}, not finite numbers")
            labels[i].append(cat)
            boxes[i].append((x, y, x + w, y + h))
    except KeyError as e:
        raise UserError(f"COCO annotation file {path} is not in COCO instances format (missing key {e} "
                        "or an annotation of an unknown image_id)") from None
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"COCO annotation file {path} is not in COCO instances format ({e})") from None
    return {"images": images, "categories": categories, "labels": labels, "boxes": boxes}


def _coco_split(root: Path, ann_file: str, image_dir: str, transform, name: str,
                categories=None) -> MultiLabelImages:
    ann_path = root / "annotations" / ann_file
    parsed = read_coco(ann_path)
    if categories is not None and parsed["categories"] != categories:
        raise UserError(f"COCO annotation file {ann_path} has other categories than the training file "
                        f"({len(parsed['categories'])} vs {len(categories)})")
    cats = parsed["categories"]
    to_index = {cid: i for i, (cid, _) in enumerate(cats)}
    names = [f for f, _, _ in parsed["images"]]
    folder = root / image_dir
    check_images(folder, names, ann_path)
    n, c = len(names), len(cats)
    targets = torch.zeros(n, c)
    label_rows = []
    for i, lab in enumerate(parsed["labels"]):
        idx = [to_index[cid] for cid in lab]
        targets[i, idx] = 1.0
        label_rows.append(idx)
    ds = MultiLabelImages([folder / f for f in names], targets, transform, [nm for _, nm in cats],
                          boxes=Ragged.from_rows(parsed["boxes"], np.float32, 4),
                          box_labels=Ragged.from_rows(label_rows, np.int64),
                          image_sizes=torch.tensor([(w, h) for _, w, h in parsed["images"]], dtype=torch.long)
                          .reshape(-1, 2), name=name)
    ds.categories = cats
    return ds


def find_root(cfg, name: str, marker: str, layouts: tuple, how: str) -> Path:
    if not cfg.root:
        raise UserError(f"dataset '{name}' is read from disk: give its folder with --data-dir or "
                        f"--set data.root=PATH ({how})")
    root = Path(cfg.root).expanduser()
    for cand in (root, *(root / sub for sub in layouts)):
        if (cand / marker).exists():
            return cand
    raise UserError(f"{name} not found under {root}: expected {root / marker} ({how})")


def build(cfg, train: bool = True) -> DataBundle:
    """COCO as a DataBundle: train split `train20YY` (if `train`) and eval split `val`."""
    options = check_options(cfg, "coco", COCO_OPTIONS)
    year = str(options.get("year", 2014))
    if year not in ("2014", "2017"):
        raise UserError(f"data.options.year: COCO {year} is not supported; valid: 2014, 2017")
    how = (f"annotations/instances_train{year}.json, annotations/instances_val{year}.json, "
           f"train{year}/ and val{year}/ from cocodataset.org")
    root = find_root(cfg, "coco", "annotations", (f"COCO{year}", "coco"), how)
    size = cfg.img_size or DEFAULT_SIZE
    val = _coco_split(root, f"instances_val{year}.json", f"val{year}",
                      multilabel_transform(size, False), "val")
    trainset = None
    if train:
        trainset = _coco_split(root, f"instances_train{year}.json", f"train{year}",
                               multilabel_transform(size, True, cfg.augment, options.get("randaugment")),
                               "train", categories=val.categories)
    return DataBundle(train=trainset, evals={"val": val}, num_classes=len(val.class_names),
                      multilabel=True, img_size=size,
                      class_names=list(val.class_names), has_boxes=True)

"""PASCAL VOC 2007 as a multi-label dataset (20 classes), read from the devkit's files:

    root/Annotations/<id>.xml   root/ImageSets/Main/{trainval,test}.txt   root/JPEGImages/<id>.jpg

(`root/VOCdevkit/VOC2007/...` and `root/VOC2007/...` are found too; the test set comes in the
separate VOCtest archive, extracted into the same folder.) Train on `trainval` (5,011 images),
evaluate on `test` (4,952 images).

Difficult objects: by default an object marked `<difficult>1</difficult>` does not make its
class positive, so an image whose only instances of a class are difficult has target 0 for it,
as the official IDA and Query2Label code does (`data.options.difficult: negative`). With
`difficult: positive` such objects count like the others (ML-GCN's convention, which maps the
devkit's 0 = "difficult only" labels to positive). Classes are in the devkit's order
(aeroplane ... tvmonitor).

Boxes are kept per image (all objects, difficult ones included): `dataset.boxes[i]` (K, 4) float
(x0, y0, x1, y1) in original pixels (0-based, x1/y1 exclusive: the XML's 1-based xmin becomes
xmin - 1), `dataset.box_labels[i]` (K,), `dataset.box_difficult[i]` (K,) bool,
`dataset.image_sizes[i]` (width, height). Transforms, augmentation and options as in
`attnzoo.data.coco` (default 448 px).

A missing file, an XML that does not parse, a size or box that is not a finite number, an unknown
class name, or an image id without its XML or JPEG raise `UserError` with one line.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .bundle import DataBundle
from .coco import (
    DEFAULT_SIZE,
    MultiLabelImages,
    check_images,
    check_options,
    find_root,
    multilabel_transform,
    pixel_size,
)
from .memory import Ragged

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
VOC_OPTIONS = ("difficult", "randaugment")
DIFFICULT = ("negative", "positive")
HOW = ("the VOC2007 devkit: Annotations/, ImageSets/Main/trainval.txt and test.txt, JPEGImages/ "
       "from VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar")


def read_voc_xml(path: Path) -> dict:
    """One annotation file -> {'size': (w, h), 'objects': [(class index, difficult, (x0, y0, x1, y1))]}."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise UserError(f"VOC annotation {path} does not parse as XML ({e})") from None
    except OSError as e:
        raise UserError(f"VOC annotation {path} cannot be read ({e.strerror or e})") from None
    try:
        size = root.find("size")
        wh = ((pixel_size(size.findtext("width"), "width"), pixel_size(size.findtext("height"), "height"))
              if size is not None else (0, 0))
        objects = []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip().lower()
            if name not in VOC_CLASSES:
                raise UserError(f"VOC annotation {path}: unknown class '{name}'; valid: {', '.join(VOC_CLASSES)}")
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            bb = obj.find("bndbox")
            box = (float(bb.findtext("xmin")) - 1, float(bb.findtext("ymin")) - 1,
                   float(bb.findtext("xmax")), float(bb.findtext("ymax"))) if bb is not None else (0, 0, 0, 0)
            if not all(math.isfinite(v) for v in box):
                raise ValueError(f"a {name} bndbox is not finite numbers")
            objects.append((VOC_CLASSES.index(name), difficult, box))
    except UserError:
        raise
    except (TypeError, ValueError, AttributeError, OverflowError) as e:
        raise UserError(f"VOC annotation {path} is not in the VOC format ({e})") from None
    return {"size": wh, "objects": objects}


def _voc_split(root: Path, split: str, transform, difficult: str) -> MultiLabelImages:
    list_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not list_file.is_file():
        extra = " (the test set is the separate VOCtest_06-Nov-2007.tar)" if split == "test" else ""
        raise UserError(f"VOC image list {list_file} not found{extra}; expected {HOW}")
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    missing = [i for i in ids if not (root / "Annotations" / f"{i}.xml").is_file()]
    if missing:
        raise UserError(f"{len(missing)} of the {len(ids)} images of {list_file} have no annotation in "
                        f"{root / 'Annotations'} (first: {missing[0]}.xml)")
    check_images(root / "JPEGImages", [f"{i}.jpg" for i in ids], list_file)
    targets = torch.zeros(len(ids), len(VOC_CLASSES))
    boxes, labels, flags, sizes = [], [], [], []
    for n, i in enumerate(ids):
        ann = read_voc_xml(root / "Annotations" / f"{i}.xml")
        for cls, diff, _ in ann["objects"]:
            if not diff or difficult == "positive":
                targets[n, cls] = 1.0
        boxes.append([b for _, _, b in ann["objects"]])
        labels.append([c for c, _, _ in ann["objects"]])
        flags.append([d for _, d, _ in ann["objects"]])
        sizes.append(ann["size"])
    ds = MultiLabelImages([root / "JPEGImages" / f"{i}.jpg" for i in ids], targets, transform,
                          list(VOC_CLASSES), boxes=Ragged.from_rows(boxes, np.float32, 4),
                          box_labels=Ragged.from_rows(labels, np.int64), image_sizes=torch.tensor(sizes).reshape(-1, 2),
                          name=split)
    ds.box_difficult = Ragged.from_rows(flags, np.bool_)
    ds.ids = ids
    return ds


def build(cfg, train: bool = True) -> DataBundle:
    """VOC 2007 as a DataBundle: train split `trainval` (if `train`), eval split `test`."""
    options = check_options(cfg, "voc", VOC_OPTIONS)
    difficult = options.get("difficult", "negative")
    if difficult not in DIFFICULT:
        raise UserError(f"data.options.difficult '{difficult}' is not valid; valid: {', '.join(DIFFICULT)}")
    root = find_root(cfg, "voc", "Annotations", ("VOCdevkit/VOC2007", "VOC2007", "VOC2007/VOCdevkit/VOC2007"), HOW)
    size = cfg.img_size or DEFAULT_SIZE
    test = _voc_split(root, "test", multilabel_transform(size, False), difficult)
    trainset = None
    if train:
        trainset = _voc_split(root, "trainval",
                              multilabel_transform(size, True, cfg.augment, options.get("randaugment")),
                              difficult)
    return DataBundle(train=trainset, evals={"test": test}, num_classes=len(VOC_CLASSES), multilabel=True,
                      img_size=size, class_names=list(VOC_CLASSES),
                      has_boxes=True)

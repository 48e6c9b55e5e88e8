"""What a dataset builder returns: the splits and what the engine needs to know about them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """Splits of one dataset plus its metadata.

    `train` is None when only evaluation was asked for. `evals` maps a split name to a dataset;
    the first one is the split that selects the best checkpoint (e.g. "test", then
    "test_swapped" for the synthetic datasets). Each dataset yields (image, target): an image
    tensor (C, H, W) (uint8 for in-memory datasets, float for file-based ones before
    normalisation) and an int class index or, when `multilabel`, a float multi-hot vector
    (num_classes,). In-memory datasets also expose `.images` (N, C, H, W) uint8, `.targets` and,
    where known, `.boxes`: per sample a float tensor (K, 4) of (x0, y0, x1, y1) pixel boxes.
    """

    train: Optional[Dataset]
    evals: dict
    num_classes: int
    multilabel: bool
    img_size: int
    mean: tuple = IMAGENET_DEFAULT_MEAN  # per channel, of images in [0, 1]
    std: tuple = IMAGENET_DEFAULT_STD
    class_names: list = field(default_factory=list)
    has_boxes: bool = False

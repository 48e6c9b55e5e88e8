"""`attnzoo train RECIPE --dry-run`: build everything a recipe names, then run two steps on
synthetic data of the recipe's shape (image size and class count), in a temporary folder."""
from __future__ import annotations

import copy
import tempfile

from .config import Config

# dataset -> (classes, native image size, multi-label); the shape a dry run imitates
DATASET_SHAPES = {
    "synthetic": (10, 32, False), "synthetic_multilabel": (10, 32, True),
    "cifar10": (10, 32, False), "cifar100": (100, 32, False), "stl10": (10, 96, False),
    "imagenet": (1000, 224, False), "imagefolder": (None, 224, False),
    "coco": (80, 448, True), "voc": (20, 448, True),
}


def dry_run_config(cfg: Config, out_dir: str | None = None) -> Config:
    classes, size, multilabel = DATASET_SHAPES.get(cfg.data.name, (None, 32, False))
    dry = copy.deepcopy(cfg)
    dry.data.name = "synthetic_multilabel" if multilabel else "synthetic"
    dry.data.root = None
    dry.data.img_size = cfg.data.img_size or size
    dry.data.batch_size = 2 * cfg.train.accum_steps  # two images a micro-batch
    dry.data.eval_batch_size = 2
    dry.data.workers = 0
    dry.data.options = {"num_train": 4, "num_test": 2, "num_classes": classes or 10}
    dry.schedule.epochs = 1
    dry.schedule.warmup_epochs = 0.0
    dry.train.max_steps = 2
    dry.train.device = "cpu" if cfg.train.device == "auto" else cfg.train.device
    dry.train.amp = "none" if dry.train.device == "cpu" else cfg.train.amp
    dry.out_dir = out_dir or tempfile.mkdtemp(prefix="attnzoo-dryrun-")
    dry.name = f"{cfg.name}-dryrun"
    return dry

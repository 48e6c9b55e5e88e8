"""In-memory datasets: every image of a split held as one uint8 tensor (N, C, H, W).

The batched loader (`attnzoo.data.loader`) augments whole batches of these tensors at once, so
datasets that fit in memory (synthetic, CIFAR, STL-10) never go through per-image transforms.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import Dataset


class BoxList:
    """Ragged per-sample rows stored padded: `boxes[i]` is `padded[i, :counts[i]]`.

    For boxes, `padded` is (N, K_max, 4) and `boxes[i]` a float tensor (K_i, 4) of (x0, y0, x1, y1)
    in pixels of the stored image, x1/y1 exclusive (a box covering pixel columns 3..7 has x0=3,
    x1=8). For box labels, `padded` is (N, K_max) and `labels[i]` the (K_i,) class of each box.
    """

    def __init__(self, padded: torch.Tensor, counts: torch.Tensor):
        self.padded = padded
        self.counts = counts

    def __len__(self) -> int:
        return self.padded.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.padded[i, : int(self.counts[i])]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class InMemoryDataset(Dataset):
    """A split in memory. Yields (image uint8 (C, H, W), target).

    `targets` is (N,) int64 class indices, or (N, num_classes) float32 multi-hot when multilabel.
    `boxes` (optional) is a `BoxList` of (K, 4) boxes, `box_labels` the matching `BoxList` of (K,)
    classes; `contexts` (optional, synthetic data) the background context id of every sample (N,)
    int64, for bias analyses.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, boxes: Optional[BoxList] = None,
                 contexts: Optional[torch.Tensor] = None, name: str = "", box_labels: Optional[BoxList] = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if targets.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
        self.images = images
        self.targets = targets
        self.boxes = boxes
        self.box_labels = box_labels
        self.contexts = contexts
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.targets[i]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"InMemoryDataset({self.name!r}, {n} images {c}x{h}x{w})"

"""In-memory datasets: every image of a split held as one uint8 tensor (N, C, H, W).

The batched loader (`attnzoo.data.loader`) augments whole batches of these tensors at once, so
datasets that fit in memory (synthetic, CIFAR, STL-10) never go through per-image transforms.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset


class Ragged:
    """Per-sample rows of varying count stored flat: `ragged[i]` is a tensor (K_i, ...).

    One flat tensor and offsets, no Python object per sample, so large datasets stay lean. Boxes
    are (K_i, 4) float (x0, y0, x1, y1) in pixels, x1/y1 exclusive (a box covering pixel columns
    3..7 has x0=3, x1=8); box labels (K_i,) class indices.
    """

    def __init__(self, flat: torch.Tensor, counts: torch.Tensor):
        self.flat = flat  # (sum K_i, ...)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.long().cumsum(0)])  # (N + 1,)

    @classmethod
    def from_rows(cls, rows: list, dtype, width: int | None = None) -> "Ragged":
        """From one list (or array) of rows per sample, each row `width` values (or one value)."""
        shape = (-1, width) if width else (-1,)
        arrays = [np.asarray(r, dtype=dtype).reshape(shape) for r in rows]
        flat = np.concatenate(arrays) if arrays else np.zeros((0, width) if width else (0,), dtype=dtype)
        return cls(torch.from_numpy(flat), torch.tensor([len(a) for a in arrays], dtype=torch.long))

    @classmethod
    def from_padded(cls, padded: torch.Tensor, counts: torch.Tensor) -> "Ragged":
        """From (N, K_max, ...) whose sample i holds its rows in `padded[i, :counts[i]]`."""
        keep = torch.arange(padded.shape[1])[None, :] < counts[:, None]  # (N, K_max)
        return cls(padded[keep], counts)

    @property
    def counts(self) -> torch.Tensor:
        return self.offsets.diff()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.flat[int(self.offsets[i]): int(self.offsets[i + 1])]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class InMemoryDataset(Dataset):
    """A split in memory. Yields (image uint8 (C, H, W), target).

    `targets` is (N,) int64 class indices, or (N, num_classes) float32 multi-hot when multilabel.
    `boxes` (optional) is a `Ragged` of (K, 4) boxes, `box_labels` the matching `Ragged` of (K,)
    classes; `contexts` (optional, synthetic data) the background context id of every sample (N,)
    int64, for bias analyses.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, boxes: Optional[Ragged] = None,
                 contexts: Optional[torch.Tensor] = None, name: str = "", box_labels: Optional[Ragged] = None):
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

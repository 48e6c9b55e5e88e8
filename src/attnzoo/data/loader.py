"""Loaders: sharded, resumable iteration over a split, yielding normalised float batches.

Order and sharding (both kinds of dataset):
- Train: every epoch a permutation of the split is drawn from a generator seeded from
  (seed, epoch) (`epoch_generator`), cut into global batches of `per_rank * world_size` samples
  (`per_rank = batch_size // world_size`), the last incomplete one dropped. Rank r takes positions
  r, r + W, r + 2W, ... of each global batch, so the ranks' batches are disjoint and their union is
  exactly the batch a single process would see with the same global batch. Augmentation parameters
  are drawn per position of the epoch, so a sample is augmented the same way whatever the number of
  processes or workers, and a resumed run replays the same epoch exactly.
- Eval: no shuffle, no drop, no padding: rank r takes indices r, r + W, r + 2W, ... of the split,
  in batches of `eval_batch_size // world_size` (default eval_batch_size = 2 * batch_size). Every
  sample is seen exactly once across ranks; per-rank sums (loss sum, correct counts, sample count)
  must be summed with an all-reduce, and multi-label scores gathered (all_gather) before computing
  mAP; ranks can hold one sample more than others, so gathers must handle unequal sizes.

In-memory datasets (`.images` uint8 (N, C, H, W)) are augmented batch-wise (`BatchAugment`);
others go through a torch DataLoader with `cfg.workers` workers and per-image transforms, each
sample's transform seeded from (seed, epoch, position). Unreadable images are skipped with one
warning per loader and counted in `loader.skipped_images` and on the dataset (`num_skipped`,
distinct files over every loader of that dataset; under DDP per rank: sum with an all-reduce).
"""
from __future__ import annotations

import random
import signal
import warnings
from typing import Optional

import torch

from ..errors import UserError
from .transforms import BatchAugment, cutout_mask, epoch_generator, normalise_


def _per_rank(total: int, world_size: int, what: str) -> int:
    per = total // world_size
    if per < 1:
        raise UserError(f"{what} {total} is smaller than the number of processes ({world_size}); "
                        f"use at least {world_size}")
    return per


class ShardedLoader:
    """Shared order, sharding and bookkeeping of both loader kinds."""

    def __init__(self, dataset, bundle, cfg, train: bool, seed: int, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.dataset, self.bundle, self.train = dataset, bundle, train
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.num_classes = bundle.num_classes
        self.epoch = 0
        self.skip_batches = 0
        self.n = len(dataset)
        if train:
            self.batch_size = _per_rank(cfg.batch_size, world_size, "data.batch_size")
        else:
            self.batch_size = _per_rank(cfg.eval_batch_size or 2 * cfg.batch_size, world_size,
                                        "data.eval_batch_size")
        self.global_batch = self.batch_size * world_size

    @property
    def skipped_images(self) -> int:
        """Distinct unreadable images of this loader's dataset met so far."""
        return len(getattr(self.dataset, "skipped_paths", {}))

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch whose order and augmentation the next iteration replays; optionally skip
        its first `skip_batches` batches (to resume inside an epoch)."""
        self.epoch = int(epoch)
        self.skip_batches = int(skip_batches)

    def __len__(self) -> int:
        if self.train:
            return self.n // self.global_batch
        mine = len(range(self.rank, self.n, self.world_size))
        return -(-mine // self.batch_size)

    def _plan(self):
        """(batches of dataset indices for this rank, their epoch positions, epoch generator)."""
        if not self.train:
            idx = torch.arange(self.rank, self.n, self.world_size)
            return list(idx.split(self.batch_size)), None, None
        g = epoch_generator(self.seed, self.epoch)
        perm = torch.randperm(self.n, generator=g)
        batches, positions = [], []
        for b in range(len(self)):
            pos = b * self.global_batch + self.rank + self.world_size * torch.arange(self.batch_size)
            batches.append(perm[pos])
            positions.append(pos)
        return batches, positions, g


class InMemoryLoader(ShardedLoader):
    """Batched augmentation over an in-memory dataset; yields (images float32 NCHW, targets).

    `device`: where augmentation runs (CPU by default; a CUDA device makes it nearly free).
    """

    def __init__(self, dataset, bundle, cfg, train, seed, rank=0, world_size=1, device=None):
        super().__init__(dataset, bundle, cfg, train, seed, rank, world_size)
        images = dataset.images
        self.device = torch.device(device) if device is not None else images.device
        self.augment = BatchAugment(cfg.augment, tuple(images.shape[-2:]), bundle.img_size, bundle.mean,
                                    bundle.std, train, cfg.cutout, cfg.cutout_holes)

    def __iter__(self):
        skip, self.skip_batches = self.skip_batches, 0  # applies to this iteration only
        batches, positions, g = self._plan()
        params = self.augment.params(self.n, g) if self.train else {}
        images, targets = self.dataset.images, self.dataset.targets
        for b in range(skip, len(batches)):
            idx = batches[b]
            p = {k: v[positions[b]] for k, v in params.items()} if self.train else None
            x = torch.index_select(images, 0, idx).to(self.device, non_blocking=True)
            yield self.augment(x, p), torch.index_select(targets, 0, idx)


class _Seeded(torch.utils.data.Dataset):
    """Wraps a file dataset: item (index, sample_seed) -> seeds torch, loads, or marks unreadable."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, sample_seed = item
        if sample_seed < 0:
            return self._load(index)
        # torch's and Python's generators drive torchvision's and timm's random transforms; in the
        # main process (workers=0) their state is restored afterwards so training randomness is kept
        in_main = torch.utils.data.get_worker_info() is None
        saved = (torch.get_rng_state(), random.getstate()) if in_main else None
        torch.manual_seed(sample_seed)
        random.seed(sample_seed)
        try:
            return self._load(index)
        finally:
            if saved is not None:
                torch.set_rng_state(saved[0])
                random.setstate(saved[1])

    def _load(self, index):
        try:
            return self.dataset[index]
        except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ...)
            if not getattr(self.dataset, "is_unreadable", lambda exc: True)(e):
                raise
            return ("__unreadable__", int(index), f"{type(e).__name__}: {e}")


def _is_marker(s) -> bool:
    return isinstance(s, tuple) and len(s) == 3 and isinstance(s[0], str) and s[0] == "__unreadable__"


def _collate(samples):
    good = [s for s in samples if not _is_marker(s)]
    bad = [(s[1], s[2]) for s in samples if _is_marker(s)]
    if not good:
        return None, None, bad
    images = torch.stack([s[0] for s in good])
    targets = [s[1] for s in good]
    targets = torch.stack(targets) if isinstance(targets[0], torch.Tensor) else torch.as_tensor(targets)
    return images, targets, bad


def _leave_stop_signals_to_main(worker_id: int) -> None:
    """In a DataLoader worker: ignore SIGTERM and SIGUSR1, which a cluster sends to every process
    of a job; the main process saves the run and ends the workers (attnzoo.engine.preemption)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class FileLoader(ShardedLoader):
    """A torch DataLoader over a file dataset (per-image transforms in `cfg.workers` processes);
    normalisation and cutout are applied to each batch in the main process."""

    def __init__(self, dataset, bundle, cfg, train, seed, rank=0, world_size=1, device=None):
        super().__init__(dataset, bundle, cfg, train, seed, rank, world_size)
        self.workers = cfg.workers
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cutout = cfg.cutout if train else 0
        self.holes = cfg.cutout_holes
        self._warned = False

    def __iter__(self):
        skip, self.skip_batches = self.skip_batches, 0  # applies to this iteration only
        batches, positions, g = self._plan()
        if self.train:
            seeds = torch.randint(0, 2 ** 62, (self.n,), generator=g)
            cut = (torch.randint(0, self.bundle.img_size, (self.n, self.holes, 2), generator=g)
                   if self.cutout else None)
        items = []
        for b in range(skip, len(batches)):
            s = seeds[positions[b]].tolist() if self.train else [-1] * len(batches[b])
            items.append(list(zip(batches[b].tolist(), s)))
        loader = torch.utils.data.DataLoader(_Seeded(self.dataset), batch_sampler=items, num_workers=self.workers,
                                             collate_fn=_collate, persistent_workers=False,
                                             worker_init_fn=_leave_stop_signals_to_main,
                                             generator=epoch_generator(self.seed, self.epoch))  # not the global one
        for k, (x, y, bad) in enumerate(loader):
            if bad:
                self._note_unreadable(bad)
            if x is None:
                continue
            x = normalise_(x.to(self.device), self.bundle.mean, self.bundle.std)
            if self.cutout:
                b = skip + k
                unreadable = {j for j, _ in bad}
                keep = [i for i, (index, _) in enumerate(items[k]) if index not in unreadable]
                c = cut[positions[b][keep]].to(x.device)
                x.mul_(cutout_mask(c, self.cutout, x.shape[-2], x.shape[-1]))
            yield x, y

    def _note_unreadable(self, bad) -> None:
        # recorded on the dataset (`skipped_paths`, `num_skipped`): the union over every loader and
        # epoch that read it, which is what a run summary reports
        if not hasattr(self.dataset, "skipped_paths"):
            self.dataset.skipped_paths = {}
        for index, why in bad:
            path = self.dataset.path_of(index) if hasattr(self.dataset, "path_of") else str(index)
            self.dataset.skipped_paths.setdefault(path, why)
            if not self._warned:
                self._warned = True
                warnings.warn(f"skipping unreadable image {path} ({why}); further unreadable images are "
                              f"skipped silently and counted in skipped_images", RuntimeWarning, stacklevel=3)
        self.dataset.num_skipped = len(self.dataset.skipped_paths)

def build_loader(dataset, bundle, cfg, train: bool, seed: int, rank: int = 0, world_size: int = 1,
                 device: Optional[torch.device] = None):
    """An iterable over `dataset` yielding (images float32 (B, C, S, S) normalised, targets).

    `S` is `bundle.img_size`; targets are int64 (B,) or float (B, num_classes) when multilabel.
    The loader has `len()`, `set_epoch(epoch, skip_batches=0)`, `num_classes`, `batch_size` (per
    rank) and `skipped_images`. In-memory datasets are augmented batch-wise (on `device` if given),
    file datasets go through a DataLoader with `cfg.workers` workers. See the module docstring for
    order, sharding and how to reduce evaluation results across ranks.
    """
    cls = InMemoryLoader if hasattr(dataset, "images") else FileLoader
    return cls(dataset, bundle, cfg, train, seed, rank, world_size, device)

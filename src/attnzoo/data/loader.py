"""Loaders: sharded, resumable iteration over a split, yielding normalised float batches on the device.

Order and sharding (both kinds of dataset):
- Train: every epoch a permutation of the split is drawn from a generator seeded from
  (seed, epoch) (`epoch_generator`), cut into global batches of `batch_size` samples, the last
  incomplete one dropped. With gradient accumulation (`accum_steps` A) a global batch is read as A
  consecutive micro-batches of `batch_size // A`. Each (micro-)batch is split over the processes:
  rank r takes positions r, r + W, r + 2W, ... of it, so the ranks' batches are disjoint and their
  union is exactly the batch a single process would see with the same global batch. Augmentation
  parameters are drawn per position of the epoch, so a sample is augmented the same way whatever
  the number of processes, workers or micro-batches, and a resumed run replays the same epoch exactly.
- Eval: no shuffle, no drop, no padding: rank r takes indices r, r + W, r + 2W, ... of the split,
  in batches of `eval_batch_size // world_size` (default eval_batch_size = 2 * batch_size). Every
  sample is seen exactly once across ranks; per-rank sums (loss sum, correct counts, sample count)
  must be summed with an all-reduce, and multi-label scores gathered (all_gather) before computing
  mAP; ranks can hold one sample more than others, so gathers must handle unequal sizes.

The device path: images stay uint8 until they are on `device`, where they are augmented and
normalised. In-memory datasets (`.images` uint8 (N, C, H, W)) are copied to a CUDA device once when
they fit in a quarter of its free memory, then indexed and augmented there batch-wise
(`BatchAugment`). File datasets go through one torch DataLoader for the whole run (persistent
workers, `data.workers`, "auto": the cores of this process less one): workers decode and transform
each image to uint8, seeded from (seed, epoch, position); on CUDA the batches are pinned and copied
one batch ahead on a side stream (`device_batches`); normalisation and cutout run on the device
(on the CPU into memory reused from batch to batch, never under a batch the caller still holds).
Unreadable images are skipped with one warning per loader and counted in `loader.skipped_images`
and on the dataset (`num_skipped`, distinct files over every loader of that dataset; under DDP
per rank: sum with an all-reduce).
"""
from __future__ import annotations

import math
import os
import random
import signal
import warnings
import weakref
from typing import Optional

import torch

from ..errors import UserError
from .transforms import BatchAugment, cutout_mask, epoch_generator, normalise_

DEVICE_SHARE = 0.25  # an in-memory split moves to a CUDA device when it needs at most this share of its free memory


def resolve_workers(workers) -> int:
    """`data.workers` as a number: "auto" is the cores available to each process on this host
    (the CPU affinity shared by torchrun's LOCAL_WORLD_SIZE processes) less one, the main process's."""
    if workers != "auto":
        return int(workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(cores // max(local, 1) - 1, 0)


def _per_rank(total: int, world_size: int, what: str) -> int:
    per = total // world_size
    if per < 1:
        raise UserError(f"{what} {total} is smaller than the number of processes ({world_size}); "
                        f"use at least {world_size}")
    return per


def _to(batch, device: torch.device, non_blocking: bool = False):
    """Every tensor of a (nested) tuple/list batch on `device`; everything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device, non_blocking) for b in batch)
    return batch


def _tensors(batch):
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, (tuple, list)):
        for b in batch:
            yield from _tensors(b)


def device_batches(batches, device: torch.device):
    """The batches of an iterable on `device`. On CUDA each batch (pinned by the DataLoader) is
    copied one batch ahead on a side stream, so the copy overlaps the step of the batch before;
    the consumer's stream waits for it. Elsewhere a plain copy (none on the CPU)."""
    if device.type != "cuda":
        for batch in batches:
            yield _to(batch, device)
        return
    side = torch.cuda.Stream(device)
    it = iter(batches)

    def fetch():
        batch = next(it, None)
        if batch is not None:
            with torch.cuda.stream(side):
                batch = _to(batch, device, non_blocking=True)
        return batch

    ahead = fetch()
    while ahead is not None:
        batch = ahead
        main = torch.cuda.current_stream(device)
        main.wait_stream(side)
        for t in _tensors(batch):
            t.record_stream(main)  # allocated on the side stream, used on the main one
        ahead = fetch()
        yield batch


class ShardedLoader:
    """Shared order, sharding and bookkeeping of both loader kinds."""

    def __init__(self, dataset, bundle, cfg, train: bool, seed: int, rank: int, world_size: int,
                 accum_steps: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.dataset, self.bundle, self.train = dataset, bundle, train
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.num_classes = bundle.num_classes
        self.epoch = 0
        self.skip_batches = 0
        self.n = len(dataset)
        self.accum_steps = accum_steps if train else 1
        if train:
            if cfg.batch_size % accum_steps:
                raise UserError(f"train.accum_steps={accum_steps} must divide data.batch_size={cfg.batch_size}; "
                                f"use a batch size that is a multiple of it")
            self.batch_size = _per_rank(cfg.batch_size // accum_steps, world_size,
                                        "data.batch_size / train.accum_steps")
        else:
            self.batch_size = _per_rank(cfg.eval_batch_size or 2 * cfg.batch_size, world_size,
                                        "data.eval_batch_size")
        self.global_batch = self.batch_size * world_size  # of one micro-batch over all processes

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
        """Batches (micro-batches with accumulation: whole global batches only) of one pass."""
        if self.train:
            return self.n // self.global_batch // self.accum_steps * self.accum_steps
        mine = len(range(self.rank, self.n, self.world_size))
        return -(-mine // self.batch_size)

    def _plan(self, home=None):
        """(batches of dataset indices for this rank, on `home` (default the CPU), their epoch
        positions, epoch generator). Evaluation's last batch may be short: views of one index tensor."""
        if not self.train:
            idx = torch.arange(self.rank, self.n, self.world_size, device=home)
            return idx.split(self.batch_size), None, None
        g = epoch_generator(self.seed, self.epoch)
        perm = torch.randperm(self.n, generator=g)
        first = self.global_batch * torch.arange(len(self))[:, None]  # (batches, 1)
        positions = first + self.rank + self.world_size * torch.arange(self.batch_size)  # (batches, per rank)
        return perm[positions].to(home), positions, g


class InMemoryLoader(ShardedLoader):
    """Batched augmentation over an in-memory dataset; yields (images float32 NCHW, targets) on
    `device` (default: where the images are)."""

    def __init__(self, dataset, bundle, cfg, train, seed, rank=0, world_size=1, device=None, accum_steps=1):
        super().__init__(dataset, bundle, cfg, train, seed, rank, world_size, accum_steps)
        images = dataset.images
        self.device = torch.device(device) if device is not None else images.device
        self.images, self.targets = images, dataset.targets
        if self.device.type == "cuda" and images.device != self.device:
            free, _ = torch.cuda.mem_get_info(self.device)
            if images.numel() <= DEVICE_SHARE * free:  # uint8: bytes
                self.images, self.targets = images.to(self.device), dataset.targets.to(self.device)
        self.augment = BatchAugment(cfg.augment, tuple(images.shape[-2:]), bundle.img_size, bundle.mean,
                                    bundle.std, train, cfg.cutout, cfg.cutout_holes)

    def __iter__(self):
        skip, self.skip_batches = self.skip_batches, 0  # applies to this iteration only
        home = self.images.device  # where the split is indexed: the device when it fits there
        # the epoch's order and augmentation parameters travel once, not per batch
        batches, positions, g = self._plan(home)
        params = {k: v.to(self.device) for k, v in self.augment.params(self.n, g).items()} if self.train else {}
        if self.train:
            positions = positions.to(self.device)
        pin = self.device.type == "cuda" and home.type == "cpu"
        for b in range(skip, len(batches)):
            idx = batches[b]
            x = torch.index_select(self.images, 0, idx)  # (B, C, H, W) uint8
            y = torch.index_select(self.targets, 0, idx)
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = _to((x, y), self.device, non_blocking=True)
            p = {k: v[positions[b]] for k, v in params.items()} if self.train else None
            yield self.augment(x, p), y


class _Seeded(torch.utils.data.Dataset):
    """Wraps a file dataset: item (index, sample_seed, position) -> seeds torch, loads, or marks
    the sample unreadable; returns (sample, position)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, sample_seed, position = item
        if sample_seed < 0:
            return self._load(index), position
        # torch's and Python's generators drive torchvision's and timm's random transforms; in the
        # main process (workers=0) their state is restored afterwards so training randomness is kept
        in_main = torch.utils.data.get_worker_info() is None
        saved = (torch.get_rng_state(), random.getstate()) if in_main else None
        torch.default_generator.manual_seed(sample_seed)  # the CPU's only: torch.manual_seed costs ms
        random.seed(sample_seed)
        try:
            return self._load(index), position
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
    """[(sample, position)] -> (images (B, C, S, S), targets, positions (B,), [(index, why)] unreadable)."""
    good = [(s, pos) for s, pos in samples if not _is_marker(s)]
    bad = [(s[1], s[2]) for s, _ in samples if _is_marker(s)]
    if not good:
        return None, None, None, bad
    images = torch.stack([s[0] for s, _ in good])
    targets = [s[1] for s, _ in good]
    targets = torch.stack(targets) if isinstance(targets[0], torch.Tensor) else torch.as_tensor(targets)
    return images, targets, torch.tensor([pos for _, pos in good]), bad


class _EpochBatches(torch.utils.data.Sampler):
    """The batch sampler of the run's one DataLoader: the batches of (index, seed, position) that
    the loader planned for the iteration under way."""

    def __init__(self):
        self.items: list = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _leave_stop_signals_to_main(worker_id: int) -> None:
    """In a DataLoader worker: ignore SIGTERM and SIGUSR1, which a cluster sends to every process
    of a job; the main process saves the run and ends the workers (attnzoo.engine.preemption)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class _HostBatches:
    """Memory for the float batches of a CPU run, reused from step to step: a fresh batch each step
    (19 MB at 32 x 224 px) costs the training process a page fault per 4 KiB page whenever glibc has
    handed the last one back to the kernel. Each batch is a tensor over a new memoryview of its
    buffer; the view's weak reference dies with the last tensor, view or storage using that memory,
    and only then is the buffer reused, so a batch the caller keeps is never overwritten."""

    def __init__(self, keep: int = 2):  # the batch a loop holds + the one being made
        self.keep = keep
        self.buffers: list = []  # [bytearray, weak reference to the memoryview of its last batch]

    def take(self, shape) -> torch.Tensor:
        """An uninitialised float32 tensor of `shape` that no one else uses."""
        nbytes = 4 * math.prod(shape)
        free = [b for b in self.buffers if len(b[0]) == nbytes and b[1]() is None]
        if free:
            entry = free[0]
        elif len(self.buffers) < self.keep:
            entry = [bytearray(nbytes), None]
            self.buffers.append(entry)
        else:  # the caller keeps batches, or the shape changed: plain memory
            return torch.empty(shape)
        view = memoryview(entry[0])
        entry[1] = weakref.ref(view)
        return torch.frombuffer(view, dtype=torch.float32).view(shape)


class FileLoader(ShardedLoader):
    """One torch DataLoader over a file dataset for the whole run (persistent workers decode and
    transform each image to uint8); batches reach `device` pinned and one ahead, and are normalised
    and cut out there."""

    def __init__(self, dataset, bundle, cfg, train, seed, rank=0, world_size=1, device=None, accum_steps=1):
        super().__init__(dataset, bundle, cfg, train, seed, rank, world_size, accum_steps)
        self.workers = resolve_workers(cfg.workers)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cutout = cfg.cutout if train else 0
        self.holes = cfg.cutout_holes
        self._warned = False
        self._batches = _EpochBatches()
        self._host = _HostBatches() if self.device.type == "cpu" else None
        # worker seeds come from this generator, not torch's global one, which a resumed run restores
        self._loader = torch.utils.data.DataLoader(
            _Seeded(dataset), batch_sampler=self._batches, num_workers=self.workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
            worker_init_fn=_leave_stop_signals_to_main, generator=torch.Generator().manual_seed(self.seed))

    def __iter__(self):
        skip, self.skip_batches = self.skip_batches, 0  # applies to this iteration only
        batches, positions, g = self._plan()
        rows = range(skip, len(batches))
        if self.train:
            seeds = torch.randint(0, 2 ** 62, (self.n,), generator=g)
            cut = (torch.randint(0, self.bundle.img_size, (self.n, self.holes, 2), generator=g).to(self.device)
                   if self.cutout else None)
            self._batches.items = [list(zip(batches[b].tolist(), seeds[positions[b]].tolist(),
                                            positions[b].tolist(), strict=True)) for b in rows]
        else:  # no augmentation: no seed, no position
            self._batches.items = [[(i, -1, -1) for i in batches[b].tolist()] for b in rows]
        for x, y, pos, bad in device_batches(self._loader, self.device):
            if bad:
                self._note_unreadable(bad)
            if x is None:
                continue
            scale = 1 / 255 if x.dtype == torch.uint8 else 1
            x = self._host.take(x.shape).copy_(x) if self._host is not None else x.float()  # (B, C, S, S) float32
            x = normalise_(x, self.bundle.mean, self.bundle.std, scale)
            if self.cutout:
                x.mul_(cutout_mask(cut[pos], self.cutout, x.shape[-2], x.shape[-1]))
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
                 device: Optional[torch.device] = None, accum_steps: int = 1):
    """An iterable over `dataset` yielding (images float32 (B, C, S, S) normalised, targets) on `device`.

    `S` is `bundle.img_size`; targets are int64 (B,) or float (B, num_classes) when multilabel.
    The loader has `len()`, `set_epoch(epoch, skip_batches=0)`, `num_classes`, `batch_size` (per
    rank and micro-batch) and `skipped_images`. Build it once per split and run: file datasets keep
    their DataLoader workers between epochs. `accum_steps` (train only) splits each global batch of
    `cfg.batch_size` into that many micro-batches. See the module docstring for order, sharding and
    how to reduce evaluation results across ranks.
    """
    cls = InMemoryLoader if hasattr(dataset, "images") else FileLoader
    return cls(dataset, bundle, cfg, train, seed, rank, world_size, device, accum_steps)

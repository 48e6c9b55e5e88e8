"""The training loop: config -> model, data, optimizer, schedule -> epochs -> run folder.

Read top to bottom: `train()` sets everything up and runs the epochs, `train_one_epoch()` is one
pass over the data, `TrainState` what `last.pt` keeps of the loop's progress. See docs/design.md for the
run folder this writes.
"""
from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import check_model_name
from ..data import build_data, build_loader, skipped_images
from ..errors import UserError, file_errors
from ..models.configured import create_configured_model, inserted_block
from . import checkpoint as ckpt
from .config import Config, config_to_dict, save_config
from .device import configure_cuda, out_of_memory_hint, resolve_device, resolve_precision
from .distributed import (
    DistInfo,
    broadcast_flag,
    check_same_checkpoint,
    cleanup,
    elastic_resume,
    init_distributed,
)
from .evaluate import autocast, evaluate
from .losses import build_loss, resolve_loss
from .optim import build_optimizer, build_scheduler
from .preemption import Interrupted, StopControl, continue_command
from .rundir import LAST, checkpoint_to_resume, prepare_run_dir
from .runlog import RunLog, format_epoch, format_table, run_header


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainState:
    """The loop's progress, saved in last.pt (as "progress") to continue a run exactly."""
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    best: float | None = None  # best primary metric so far
    best_epoch: int = 0
    bad_evals: int = 0  # evaluations since the best one, for early stopping
    best_metrics: dict = field(default_factory=dict)  # every split's metrics at the best, + "source"
    final: dict = field(default_factory=dict)  # every split's metrics at the last evaluation
    train_time: float = 0.0  # seconds spent in train_one_epoch
    train_images: int = 0
    # the epoch in progress, for a checkpoint inside it (all zero at an epoch's end)
    batch: int = 0  # batches (micro-batches with train.accum_steps) trained; a resumed run skips them
    epoch_loss: float = 0.0  # sum of their losses
    epoch_images: int = 0  # images they held, over all processes
    epoch_time: float = 0.0  # seconds spent on them
    epoch_lr: float = 0.0  # learning rate of the epoch's first step
    global_batch: int = 0  # images per step over all processes: a resume must keep it

    def end_epoch(self) -> tuple[float, int, float, float]:
        """(mean loss, images, seconds, first lr) of the epoch just trained; counts it as finished."""
        row = (self.epoch_loss / max(self.batch, 1), self.epoch_images, self.epoch_time, self.epoch_lr)
        self.train_time += self.epoch_time
        self.train_images += self.epoch_images
        self.epoch += 1
        self.batch, self.epoch_loss, self.epoch_images, self.epoch_time = 0, 0.0, 0, 0.0
        return row

    @classmethod
    def from_checkpoint(cls, progress, path) -> "TrainState":
        names = {f.name for f in fields(cls)}
        if not isinstance(progress, dict) or set(progress) != names:
            raise UserError(f"checkpoint {path}: its progress record does not hold {', '.join(sorted(names))}; "
                            "it was not written by this version of attnzoo")
        return cls(**progress)

    def record_eval(self, score: float, epoch: int, metrics: dict) -> bool:
        """Note an evaluation's primary `score`; True when it is the best so far."""
        if self.best is None or score > self.best:
            self.best, self.best_epoch, self.bad_evals, self.best_metrics = score, epoch, 0, metrics
            return True
        self.bad_evals += 1
        return False


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # set either way: a run in the same process (compare, the API) must not inherit the last one's
    torch.use_deterministic_algorithms(deterministic, warn_only=True)  # cuDNN: configure_cuda


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The network of the config with the dataset's class count, plus any initial weights."""
    kwargs = dict(cfg.model.kwargs)
    if kwargs.setdefault("num_classes", num_classes) != num_classes:
        raise UserError(f"model.kwargs.num_classes={kwargs['num_classes']} disagrees with the "
                        f"{num_classes} classes of dataset '{cfg.data.name}'")
    if cfg.model.pretrained:
        path = Path(cfg.model.pretrained)
        if not path.is_file():
            raise UserError(f"model.pretrained {path} does not exist; attnzoo never downloads "
                            "weights: give a local timm/torchvision weight file")
        # one path for attnzoo's and timm's networks: timm's loader, a local file, no download
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    model = create_configured_model(cfg.model, **kwargs)
    if cfg.model.checkpoint:
        state, _ = ckpt.read_weights(Path(cfg.model.checkpoint))
        ckpt.load_state_strict(model, state, f"model.checkpoint {cfg.model.checkpoint}")
    return model


def train(cfg: Config, resume: str | None = None, quiet: bool = False) -> dict:
    """Train and evaluate as `cfg` says; returns the summary also written to summary.json.

    `resume`: None (a new run; refuses a run folder holding anything of a run), "auto" (continue
    from checkpoints/last.pt when there is one) or a path to a last.pt.
    """
    dist = init_distributed(resolve_device(cfg.train.device, "train.device").type)
    command = continue_command(cfg.name, cfg.out_dir)
    try:
        with StopControl(cfg.train.checkpoint_steps, cfg.train.checkpoint_minutes, cfg.train.log_every,
                         dist.enabled, command) as control:
            return _train(cfg, resume, quiet, dist, control)
    except KeyboardInterrupt:
        raise Interrupted(command) from None
    except TrainingDiverged as e:
        last_path = cfg.run_dir / LAST
        kept = (f"{last_path} still holds the last good state" if last_path.exists()
                else "no checkpoint had been written yet")
        raise TrainingDiverged(f"{e}; stopped without saving, {kept} (lower optim.lr, enable "
                               "optim.clip_grad, or use train.amp=none)") from None
    finally:
        cleanup()


def _train(cfg: Config, resume, quiet: bool, dist: DistInfo, control: StopControl) -> dict:
    start_time = time.time()
    device = resolve_device(cfg.train.device, "train.device", dist.local_rank if dist.enabled else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        configure_cuda(cfg.train.deterministic, cfg.train.tf32)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    run_dir = cfg.run_dir
    last_path = run_dir / LAST
    check_model_name(cfg.model.name)  # before the run folder and the data: fail fast
    resume = elastic_resume(resume, device if dist.enabled else None)  # a restarted group continues
    resume_from = checkpoint_to_resume(run_dir, resume)
    if dist.enabled:
        check_same_checkpoint(resume_from, device)
        torch.distributed.barrier()  # every process has checked the folder before one writes to it
    if dist.is_main:
        prepare_run_dir(run_dir)
    saved = ckpt.load_training_state(resume_from) if resume_from else None

    with out_of_memory_hint(cfg.data.batch_size, cfg.data.img_size):
        bundle = build_data(cfg.data, train=True)
    cfg = copy.deepcopy(cfg)
    cfg.model.kwargs.setdefault("num_classes", bundle.num_classes)
    config = config_to_dict(cfg)  # cfg is final from here on; saved with every checkpoint
    # the loop's view of it: "auto" precision and layout resolved for this device
    amp, channels_last = resolve_precision(cfg.train.amp, cfg.train.channels_last, device)
    run_cfg = replace(cfg, train=replace(cfg.train, amp=amp, channels_last=channels_last))
    with out_of_memory_hint(cfg.data.batch_size, bundle.img_size):
        model = build_model(cfg, bundle.num_classes)
        if cfg.train.freeze_bn:
            from timm.layers import freeze_batch_norm_2d

            model = freeze_batch_norm_2d(model)
        params = sum(p.numel() for p in model.parameters())
        if dist.enabled and cfg.train.sync_bn:
            if device.type != "cuda":  # torch's SyncBatchNorm has no CPU implementation
                raise UserError(f"train.sync_bn=true needs CUDA devices; this run is on {device.type}: "
                                "set train.sync_bn=false")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.train.compile:  # in place: state-dict keys unchanged, copies (EMA) stay eager
            model.compile()

    # one loader per split for the whole run, yielding batches on the device
    train_loader = build_loader(bundle.train, bundle, cfg.data, train=True, seed=cfg.train.seed,
                                rank=dist.rank, world_size=dist.world_size, device=device,
                                accum_steps=cfg.train.accum_steps)
    eval_loaders = {name: build_loader(ds, bundle, cfg.data, train=False, seed=cfg.train.seed,
                                       rank=dist.rank, world_size=dist.world_size, device=device)
                    for name, ds in bundle.evals.items()}
    steps_per_epoch = len(train_loader) // cfg.train.accum_steps  # optimizer steps
    if steps_per_epoch == 0:
        raise UserError(f"data.batch_size={cfg.data.batch_size} is larger than the "
                        f"{len(bundle.train)} training images; lower it")

    optimizer = build_optimizer(model, cfg.optim, fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch, cfg.optim.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16" and device.type == "cuda")
    ema = None
    if cfg.train.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.train.ema_decay)
    train_model = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if dist.enabled else model
    criterion = build_loss(cfg.train.loss, cfg.train.loss_options, cfg.train.label_smoothing,
                           multilabel=bundle.multilabel)

    state = TrainState(global_batch=cfg.data.batch_size // dist.world_size * dist.world_size)
    changes = {}
    if saved is not None:
        changes = ckpt.check_resumable(saved, resume_from, config, model, optimizer)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None and saved.get("ema") is not None:
            ema.module.load_state_dict(saved["ema"])
        global_batch, state = state.global_batch, TrainState.from_checkpoint(saved["progress"], resume_from)
        if state.global_batch != global_batch:
            raise UserError(f"checkpoint {resume_from}: the run took global batches of "
                            f"{state.global_batch} images, data.batch_size={cfg.data.batch_size} over "
                            f"{dist.world_size} processes makes {global_batch}; use a number of processes "
                            f"that divides {state.global_batch}")
        ckpt.set_rng_state(saved["rng"])

    if dist.is_main:
        with file_errors(f"write {run_dir / 'config.yaml'}"):
            save_config(cfg, run_dir / "config.yaml")
    log = RunLog(run_dir, enabled=dist.is_main, resume_epoch=state.epoch)
    if dist.is_main and not quiet:
        print(run_header(cfg, bundle, model), flush=True)

    def save_last(progress: EpochProgress | None = None) -> None:
        if progress is not None:  # inside an epoch: its counters (the loss checked finite) first
            progress.record(state)
        if dist.is_main:
            save_checkpoint(last_path, model, optimizer, scheduler, scaler, ema, state, config)

    def step_end(epoch_end: bool, progress: EpochProgress) -> bool:  # last.pt due? stop requested?
        return control.after_step(state.step, epoch_end, lambda: save_last(progress))

    if saved is None:
        save_last()  # from the first step on, every kill leaves a last.pt to continue from
    metric = _primary_metric(bundle)
    epochs = cfg.schedule.epochs
    stopped = "completed"
    try:
        with out_of_memory_hint(cfg.data.batch_size, bundle.img_size):
            while state.epoch < epochs:
                epoch = state.epoch
                train_loader.set_epoch(epoch, skip_batches=state.batch)  # inside it when resumed there
                hit_max = train_one_epoch(
                    train_model, criterion, optimizer, scheduler, scaler, train_loader, device, epoch,
                    state, run_cfg, ema=ema, world_size=dist.world_size, show_progress=dist.is_main and not quiet,
                    step_end=step_end)
                if control.stopping:  # out of the loader's loop first, so its workers end at once
                    control.stop(state.epoch, state.batch, state.step)
                loss, images, seconds, lr = state.end_epoch()
                row = {"epoch": epoch + 1, "train_loss": loss, "lr": lr,
                       "img_per_s": images / max(seconds, 1e-9), "time_s": seconds}
                if changes:  # the keys a resume changed, in the first epoch it logs
                    row["config_changes"], changes = changes, {}
                stop = False
                if (epoch + 1) % cfg.train.eval_every == 0 or state.epoch == epochs or hit_max:
                    row["eval"] = state.final = evaluate_splits(model, eval_loaders, device, run_cfg,
                                                                bundle.multilabel)
                    candidates = {"model": (model, row["eval"])}
                    if ema is not None:
                        row["eval_ema"] = evaluate_splits(ema.module, eval_loaders, device, run_cfg,
                                                          bundle.multilabel)
                        candidates["ema"] = (ema.module, row["eval_ema"])
                    source = max(candidates, key=lambda s: _first(candidates[s][1])[metric])
                    weights, metrics = candidates[source]
                    if state.record_eval(_first(metrics)[metric], epoch + 1, {**metrics, "source": source}):
                        if dist.is_main:
                            ckpt.save_weights(run_dir / "checkpoints" / "best.safetensors", weights,
                                              config)
                    else:
                        stop = bool(cfg.train.early_stop) and state.bad_evals >= cfg.train.early_stop
                log.epoch(row)
                save_last()
                control.saved()
                if not quiet and dist.is_main and not sys.stderr.isatty():
                    print(format_epoch(row, epochs), flush=True)
                if hit_max:
                    stopped = "max_steps"
                    break
                if broadcast_flag(stop, device):
                    stopped = "early_stop"
                    break
                if state.epoch < epochs and control.at_epoch_end():
                    control.stop(state.epoch, 0, state.step)
    finally:
        log.close()

    summary = {
        "model": cfg.model.name, "attn": inserted_block(cfg.model), "run_dir": str(run_dir), "params": params,
        "loss": resolve_loss(cfg.train.loss, bundle.multilabel),
        "dataset": cfg.data.name, "seed": cfg.train.seed, "world_size": dist.world_size,
        "epochs_run": state.epoch, "steps": state.step, "stopped": stopped,
        "final": state.final, "best": state.best_metrics,
        "best_epoch": state.best_epoch, "primary_metric": metric,
        "train_img_per_s": state.train_images / max(state.train_time, 1e-9),
        "wall_time_s": time.time() - start_time,
        "skipped_images": skipped_images(train_loader, *eval_loaders.values()),  # rank 0's count
        "paper": cfg.paper,
    }
    summary.update(_cost(model, bundle))
    if dist.is_main:
        ckpt.atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2).encode())
        if not quiet:
            print(format_table(summary), flush=True)
    return summary


def _primary_metric(bundle) -> str:
    return "mAP" if bundle.multilabel else "top1"


def _cost(model, bundle) -> dict:
    """MACs and FLOPs of one image at the trained size (see attnzoo.engine.flops)."""
    from .flops import count_flops

    was_training = model.training
    try:
        counts = count_flops(ckpt.unwrap(model).eval(), (1, 3, bundle.img_size, bundle.img_size))
    finally:
        model.train(was_training)
    return {"macs": counts["macs"], "macs_elementwise": counts["macs_elementwise"], "flops": counts["flops"]}


def _first(evals: dict) -> dict:
    return next(iter(evals.values())) if evals else {}


def evaluate_splits(model, loaders: dict, device, cfg: Config, multilabel: bool) -> dict:
    """{split: metrics} of `model` on every eval loader."""
    return {name: evaluate(model, loader, device, multilabel, cfg.train.amp, cfg.train.channels_last)
            for name, loader in loaders.items()}


def save_checkpoint(path: Path, model, optimizer, scheduler, scaler, ema, state: TrainState,
                    config: dict) -> None:
    """Everything needed to continue the run exactly, as checkpoints/last.pt.

    Written only after the loss so far was found finite (`EpochProgress.record`: at a log step, or
    just before a save inside an epoch), and only when the weights (and EMA weights) are finite too: a diverged run keeps its last good checkpoint (TrainingDiverged)."""
    if not weights_finite(model, ema):
        raise TrainingDiverged(f"the weights hold nan or inf after step {state.step}")
    ckpt.save_training_state(path, {
        "model": ckpt.unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "progress": asdict(state),
        "rng": ckpt.rng_state(),
        "config": config,
    })


class EpochProgress:
    """What the log step reads of the epoch under way, from `state`'s counters of it on (a run
    resumed inside the epoch goes on from them). The loss is summed on the device, so adding to it
    never waits for the device; the images and the clock are the host's."""

    def __init__(self, state: TrainState, device: torch.device, epoch: int, epochs: int, steps: int,
                 bar=None, lines: bool = False):
        self.loss_sum = torch.tensor(state.epoch_loss, dtype=torch.float64, device=device)  # micro-batches
        self.batches = state.batch  # micro-batches summed in loss_sum
        self.images = state.epoch_images  # over all processes
        self.epoch, self.epochs, self.steps = epoch, epochs, steps  # steps: optimizer steps an epoch
        self.bar, self.lines = bar, lines
        self.logged_step = state.step  # the run's step count at the previous log step (or epoch start)
        self.time_before, self.images_before, self.t0 = state.epoch_time, state.epoch_images, time.time()

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss_sum += loss.detach()
        self.batches += 1
        self.images += images

    def record(self, state: TrainState) -> float:
        """The epoch's counters into `state` (what last.pt and the epoch's row keep); returns the
        mean loss so far. One host sync; a non-finite loss stops the run (TrainingDiverged) before
        anything is saved."""
        loss_sum = self.loss_sum.item()  # the sync
        if not math.isfinite(loss_sum):
            raise TrainingDiverged(f"loss became {loss_sum} at epoch {self.epoch + 1}, between steps "
                                   f"{self.logged_step + 1} and {state.step}")
        state.batch, state.epoch_loss, state.epoch_images = self.batches, loss_sum, self.images
        state.epoch_time = self.time_before + time.time() - self.t0
        return loss_sum / max(self.batches, 1)


def log_step(progress: EpochProgress, state: TrainState, optimizer, step_in_epoch: int) -> float:
    """THE LOG STEP, where the training loop waits for the device: called every `train.log_every`
    optimizer steps of the run and at the end of every epoch, after that step is queued.

    It reads the epoch's mean loss (one host sync), stops a diverged run (TrainingDiverged, before
    any checkpoint is written), and shows progress: the progress bar on a terminal, one log line
    otherwise. The other decisions taken at this cadence (a stop agreed over DDP, a checkpoint
    inside the epoch) are `StopControl.after_step`'s, called right after. Returns the mean loss of
    the epoch so far.
    """
    loss = progress.record(state)
    progress.logged_step = state.step
    img_s = (progress.images - progress.images_before) / max(time.time() - progress.t0, 1e-9)
    lr = optimizer.param_groups[0]["lr"]
    if progress.bar is not None:
        progress.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{img_s:.0f}", lr=f"{lr:.3g}")
    elif progress.lines and step_in_epoch < progress.steps:  # the epoch's own line follows its end
        print(f"epoch {progress.epoch + 1}/{progress.epochs} step {step_in_epoch}/{progress.steps}  "
              f"loss {loss:.4f}  lr {lr:.3g}  img/s {img_s:.0f}", flush=True)
    return loss


def weights_finite(model, ema=None) -> bool:
    """Whether every floating-point weight and buffer of `model` (and of `ema`) is finite: one sync."""
    modules = [ckpt.unwrap(model)] + ([ema.module] if ema is not None else [])
    flags = [torch.isfinite(t).all() for m in modules for t in m.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def train_one_epoch(model, criterion, optimizer, scheduler, scaler, loader, device, epoch: int,
                    state: TrainState, cfg: Config, ema=None, world_size: int = 1,
                    show_progress: bool = False, step_end=None) -> bool:
    """One pass over the training data, from batch `state.batch` on (where a run was resumed inside
    the epoch), stepping the schedule every optimizer step and counting `state.step`; the epoch's
    counters end in `state` (`TrainState.end_epoch` reads them). `step_end(epoch_end, progress)` is
    called after every optimizer step: it may write last.pt, and True ends the epoch there (a stop).
    Returns whether train.max_steps was reached. `cfg.train.amp` and `channels_last` are taken as
    given (resolved for the device).

    Nothing in a step waits for the device: the step is queued and the next batch read while the
    device works. The host waits only in `log_step` (and when last.pt is written). With
    `train.accum_steps` A, every optimizer step sums the gradients of A micro-batches (each loss
    divided by A; DDP all-reduces once, on the last).
    """
    model.train()
    accum, log_every = cfg.train.accum_steps, cfg.train.log_every
    steps_per_epoch = len(loader) // accum
    if state.batch == 0:
        state.epoch_lr = optimizer.param_groups[0]["lr"]  # the lr this epoch starts with
    terminal = show_progress and sys.stderr.isatty()
    bar = _progress_bar(loader, epoch, cfg.schedule.epochs, enabled=terminal)
    progress = EpochProgress(state, device, epoch, cfg.schedule.epochs, steps_per_epoch,
                             bar=bar if terminal else None, lines=show_progress and not terminal)
    hit_max = False
    for micro, (images, target) in enumerate(bar):
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        last = (micro + 1) % accum == 0  # the micro-batch that ends an optimizer step
        # DDP: gradients are all-reduced in the backward of the last micro-batch only
        with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with autocast(device, cfg.train.amp):
                loss = criterion(model(images), target)
            scaler.scale(loss / accum).backward()
        progress.add(loss, images.shape[0] * world_size)
        if not last:
            continue
        if cfg.optim.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        scaler.step(optimizer)  # a fused optimizer checks the scaler's inf/nan flag on the device
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update(ckpt.unwrap(model), step=state.step)
        state.step += 1
        hit_max = bool(cfg.train.max_steps) and state.step >= cfg.train.max_steps
        epoch_end = hit_max or progress.batches == len(loader)
        if not epoch_end and state.step % log_every == 0:  # the epoch's end logs below
            log_step(progress, state, optimizer, progress.batches // accum)
        if step_end is not None and step_end(epoch_end, progress):
            break  # a stop was requested and last.pt written
        if hit_max:
            break
    if hasattr(bar, "close"):
        bar.close()
    if progress.batches == 0:
        raise UserError(f"epoch {epoch + 1} ran no training step: every one of the "
                        f"{len(loader.dataset)} training images was unreadable (skipped "
                        f"{getattr(loader, 'skipped_images', 0)}); check the data folder")
    log_step(progress, state, optimizer, progress.batches // accum)
    return hit_max


def _progress_bar(loader, epoch: int, epochs: int, enabled: bool):
    """tqdm over the loader on a terminal (img/s, loss and ETA); the bare loader otherwise."""
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                dynamic_ncols=True)

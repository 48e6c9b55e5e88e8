"""The training loop: config -> model, data, optimizer, schedule -> epochs -> run folder.

Read top to bottom: `train()` sets everything up and runs the epochs, `train_one_epoch()` is one
pass over the data, `TrainState` what `last.pt` keeps of the loop's progress. See DESIGN.md for the
run folder this writes.
"""
from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import check_model_name, create_model
from ..data import build_data, build_loader, skipped_images
from ..errors import UserError, file_errors
from . import checkpoint as ckpt
from .config import Config, config_to_dict, insert_attention, save_config
from .device import out_of_memory_hint, resolve_device
from .distributed import (
    DistInfo,
    broadcast_flag,
    check_same_checkpoint,
    cleanup,
    elastic_resume,
    init_distributed,
)
from .evaluate import autocast, evaluate
from .losses import build_loss
from .optim import build_optimizer, build_scheduler
from .preemption import Interrupted, StopControl, continue_command
from .rundir import LAST, checkpoint_to_resume, prepare_run_dir
from .runlog import RunLog, format_table


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
    batch: int = 0  # batches trained; a resumed run skips them
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
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


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
    model = insert_attention(create_model(cfg.model.name, **kwargs), cfg.model)
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
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.train.compile:  # in place: state-dict keys unchanged, copies (EMA) stay eager
            model.compile()

    train_loader = build_loader(bundle.train, bundle, cfg.data, train=True, seed=cfg.train.seed,
                                rank=dist.rank, world_size=dist.world_size)
    eval_loaders = {name: build_loader(ds, bundle, cfg.data, train=False, seed=cfg.train.seed,
                                       rank=dist.rank, world_size=dist.world_size)
                    for name, ds in bundle.evals.items()}
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UserError(f"data.batch_size={cfg.data.batch_size} is larger than the "
                        f"{len(bundle.train)} training images; lower it")

    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch, cfg.optim.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp == "fp16" and device.type == "cuda")
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

    def save_last():
        if dist.is_main:
            save_checkpoint(last_path, model, optimizer, scheduler, scaler, ema, state, config)

    def step_end(epoch_end: bool) -> bool:  # after every optimizer step: last.pt due? stop requested?
        return control.after_step(state.step, epoch_end, save_last)

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
                    state, cfg, ema=ema, world_size=dist.world_size, show_progress=dist.is_main and not quiet,
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
                    row["eval"] = state.final = evaluate_splits(model, eval_loaders, device, cfg,
                                                                bundle.multilabel)
                    candidates = {"model": (model, row["eval"])}
                    if ema is not None:
                        row["eval_ema"] = evaluate_splits(ema.module, eval_loaders, device, cfg,
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
                    shown = {k: round(v, 2) for k, v in _first(row.get("eval", {"": {}})).items()}
                    print(f"epoch {epoch + 1}/{epochs} loss {loss:.4f} {shown}", flush=True)
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
        "model": cfg.model.name, "run_dir": str(run_dir), "params": params,
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
    return {"macs": counts["macs"], "flops": counts["flops"]}


def _first(evals: dict) -> dict:
    return next(iter(evals.values())) if evals else {}


def evaluate_splits(model, loaders: dict, device, cfg: Config, multilabel: bool) -> dict:
    """{split: metrics} of `model` on every eval loader."""
    return {name: evaluate(model, loader, device, multilabel, cfg.train.amp, cfg.train.channels_last)
            for name, loader in loaders.items()}


def save_checkpoint(path: Path, model, optimizer, scheduler, scaler, ema, state: TrainState,
                    config: dict) -> None:
    """Everything needed to continue the run exactly, as checkpoints/last.pt."""
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


def train_one_epoch(model, criterion, optimizer, scheduler, scaler, loader, device, epoch: int,
                    state: TrainState, cfg: Config, ema=None, world_size: int = 1,
                    show_progress: bool = False, step_end=None) -> bool:
    """One pass over the training data (from batch `state.batch` on, where a run was resumed inside
    the epoch), stepping the schedule every step and counting the epoch's progress in `state`;
    `step_end(epoch_end)` is called after every step; True ends the epoch early (a stop). Returns
    whether train.max_steps was reached."""
    model.train()
    if state.batch == 0:
        state.epoch_lr = optimizer.param_groups[0]["lr"]
    bar = _progress_bar(loader, epoch, cfg.schedule.epochs, enabled=show_progress)
    hit_max = False
    t0, time_before, images_before = time.time(), state.epoch_time, state.epoch_images
    for images, target in bar:
        images = images.to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, cfg.train.amp):
            loss = criterion(model(images), target)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"loss became {loss_value} at epoch {epoch + 1}, step {state.step + 1}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(ckpt.unwrap(model), step=state.step)
        state.step += 1
        state.batch += 1
        state.epoch_images += images.shape[0] * world_size
        state.epoch_loss += loss_value
        state.epoch_time = time_before + time.time() - t0
        if hasattr(bar, "set_postfix") and (state.batch % cfg.train.log_every == 0 or state.batch == 1):
            seen = state.epoch_images - images_before
            bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{seen / (time.time() - t0):.0f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        hit_max = bool(cfg.train.max_steps) and state.step >= cfg.train.max_steps
        if step_end is not None and step_end(hit_max or state.batch == len(loader)):
            break  # a stop was requested and last.pt written
        if hit_max:
            break
    if hasattr(bar, "close"):
        bar.close()
    if state.batch == 0:
        raise UserError(f"epoch {epoch + 1} ran no training step: every one of the "
                        f"{len(loader.dataset)} training images was unreadable (skipped "
                        f"{getattr(loader, 'skipped_images', 0)}); check the data folder")
    return hit_max


def _progress_bar(loader, epoch: int, epochs: int, enabled: bool):
    """tqdm over the loader on a terminal (img/s, loss and ETA); the bare loader otherwise."""
    if not enabled or not sys.stderr.isatty():
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                dynamic_ncols=True)

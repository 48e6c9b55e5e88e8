"""The training loop: config -> model, data, optimizer, schedule -> epochs -> run folder.

Read top to bottom: `train()` sets everything up, `_run_epochs()` is the loop, `_train_one_epoch()`
one pass over the data. See DESIGN.md for the run folder this writes.
"""
from __future__ import annotations

import copy
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import check_model_name, create_model
from ..data import build_data, build_loader, skipped_images
from ..errors import UserError
from . import checkpoint as ckpt
from .config import Config, config_to_dict, save_config
from .device import resolve_device
from .distributed import DistInfo, broadcast_flag, cleanup, init_distributed
from .evaluate import autocast, evaluate
from .losses import build_loss
from .optim import build_optimizer, build_scheduler
from .runlog import RunLog, format_table


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    model = create_model(cfg.model.name, **kwargs)
    if cfg.model.checkpoint:
        state, _ = ckpt.read_weights(Path(cfg.model.checkpoint))
        ckpt.load_state_strict(model, state, f"model.checkpoint {cfg.model.checkpoint}")
    return model


def train(cfg: Config, resume: str | None = None, quiet: bool = False) -> dict:
    """Train and evaluate as `cfg` says; returns the summary also written to summary.json.

    `resume`: None (a new run; refuses to overwrite one), "auto" (continue from
    checkpoints/last.pt when there is one) or a path to a last.pt.
    """
    dist = init_distributed(resolve_device(cfg.train.device, "train.device").type)
    try:
        return _train(cfg, resume, quiet, dist)
    finally:
        cleanup()


def _train(cfg: Config, resume, quiet, dist: DistInfo) -> dict:
    start_time = time.time()
    device = resolve_device(cfg.train.device, "train.device", dist.local_rank if dist.enabled else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    run_dir = cfg.run_dir
    last_path = run_dir / "checkpoints" / "last.pt"
    state = _resume_state(resume, last_path)
    if state is None and last_path.exists():
        raise UserError(f"run folder {run_dir} already holds a run; continue it with --resume auto "
                        "or choose another --name")

    check_model_name(cfg.model.name)  # before the data, which can take a while to load
    bundle = build_data(cfg.data, train=True)
    cfg = copy.deepcopy(cfg)
    cfg.model.kwargs.setdefault("num_classes", bundle.num_classes)
    model = build_model(cfg, bundle.num_classes)
    if cfg.train.freeze_bn:
        from timm.layers import freeze_batch_norm_2d

        model = freeze_batch_norm_2d(model)
    params = sum(p.numel() for p in model.parameters())
    if dist.enabled and cfg.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)

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

    progress = {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "bad_evals": 0,
                "best_metrics": {}, "final": {}, "train_time": 0.0, "train_images": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        progress.update(state["progress"])
        ckpt.set_rng_state(state["rng"])

    if dist.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    log = RunLog(run_dir, enabled=dist.is_main, resume_epoch=progress["epoch"])
    ctx = dict(cfg=cfg, dist=dist, device=device, model=model, train_model=train_model,
               optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema,
               criterion=criterion, bundle=bundle, train_loader=train_loader,
               eval_loaders=eval_loaders, log=log, last_path=last_path, quiet=quiet)
    try:
        stopped = _run_epochs(ctx, progress)
    finally:
        log.close()

    summary = {
        "model": cfg.model.name, "run_dir": str(run_dir), "params": params,
        "dataset": cfg.data.name, "seed": cfg.train.seed, "world_size": dist.world_size,
        "epochs_run": progress["epoch"], "steps": progress["step"], "stopped": stopped,
        "final": progress["final"], "best": progress["best_metrics"],
        "best_epoch": progress["best_epoch"], "primary_metric": _primary_metric(bundle),
        "train_img_per_s": progress["train_images"] / max(progress["train_time"], 1e-9),
        "wall_time_s": time.time() - start_time,
        "skipped_images": skipped_images(train_loader, *eval_loaders.values()),  # rank 0's count
        "paper": cfg.paper,
    }
    summary.update(_cost(model, bundle))
    if dist.is_main:
        import json

        ckpt.atomic_write(run_dir / "summary.json",
                          lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
        if not quiet:
            print(format_table(summary), flush=True)
    return summary


def _resume_state(resume, last_path: Path):
    if resume is None:
        return None
    path = last_path if resume == "auto" else Path(resume)
    if not path.exists():
        if resume == "auto":
            return None  # nothing to resume: start fresh
        raise UserError(f"--resume {resume}: no such checkpoint")
    return ckpt.load_training_state(path)


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


def _run_epochs(c: dict, progress: dict) -> str:
    cfg, dist = c["cfg"], c["dist"]
    metric = _primary_metric(c["bundle"])
    epochs = cfg.schedule.epochs
    while progress["epoch"] < epochs:
        epoch = progress["epoch"]
        c["train_loader"].set_epoch(epoch)
        t0 = time.time()
        loss, images, hit_max = _train_one_epoch(c, progress, epoch)
        seconds = time.time() - t0
        progress["train_time"] += seconds
        progress["train_images"] += images
        progress["epoch"] = epoch + 1
        row = {"epoch": epoch + 1, "train_loss": loss, "lr": c["optimizer"].param_groups[0]["lr"],
               "img_per_s": images / max(seconds, 1e-9), "time_s": seconds}
        last = progress["epoch"] == epochs or hit_max
        stop = False
        if (epoch + 1) % cfg.train.eval_every == 0 or last:
            row["eval"] = _evaluate_all(c, c["model"])
            progress["final"] = row["eval"]
            candidates = [("model", row["eval"])]
            if c["ema"] is not None:
                row["eval_ema"] = _evaluate_all(c, c["ema"].module)
                candidates.append(("ema", row["eval_ema"]))
            source, metrics = max(candidates, key=lambda kv: _first(kv[1])[metric])
            score = _first(metrics)[metric]
            if progress["best"] is None or score > progress["best"]:
                progress.update(best=score, best_epoch=epoch + 1, bad_evals=0,
                                best_metrics={**metrics, "source": source})
                if dist.is_main:
                    weights = c["model"] if source == "model" else c["ema"].module
                    ckpt.save_weights(cfg.run_dir / "checkpoints" / "best.safetensors", weights,
                                      config_to_dict(cfg))
            else:
                progress["bad_evals"] += 1
                stop = bool(cfg.train.early_stop) and progress["bad_evals"] >= cfg.train.early_stop
        c["log"].epoch(row)
        if dist.is_main:
            _save_last(c, progress)
        if not c["quiet"] and dist.is_main and not sys.stderr.isatty():
            shown = {k: round(v, 2) for k, v in _first(row.get("eval", {"": {}})).items()}
            print(f"epoch {epoch + 1}/{epochs} loss {loss:.4f} {shown}", flush=True)
        if hit_max:
            return "max_steps"
        if broadcast_flag(stop, c["device"]):
            return "early_stop"
    return "completed"


def _first(evals: dict) -> dict:
    return next(iter(evals.values())) if evals else {}


def _evaluate_all(c: dict, model) -> dict:
    return {name: evaluate(model, loader, c["device"], c["bundle"].multilabel, c["cfg"].train.amp,
                           c["cfg"].train.channels_last)
            for name, loader in c["eval_loaders"].items()}


def _save_last(c: dict, progress: dict) -> None:
    state = {
        "model": ckpt.unwrap(c["model"]).state_dict(),
        "optimizer": c["optimizer"].state_dict(),
        "scheduler": c["scheduler"].state_dict(),
        "scaler": c["scaler"].state_dict(),
        "ema": c["ema"].module.state_dict() if c["ema"] is not None else None,
        "progress": progress,
        "rng": ckpt.rng_state(),
        "config": config_to_dict(c["cfg"]),
    }
    ckpt.save_training_state(c["last_path"], state)


def _train_one_epoch(c: dict, progress: dict, epoch: int):
    """One pass over the training data; returns (mean loss, images seen, max_steps reached)."""
    cfg, device, model = c["cfg"], c["device"], c["train_model"]
    optimizer, scheduler, scaler, ema = c["optimizer"], c["scheduler"], c["scaler"], c["ema"]
    model.train()
    loader = c["train_loader"]
    bar = _progress_bar(loader, epoch, cfg.schedule.epochs, enabled=c["dist"].is_main and not c["quiet"])
    total_loss, seen, steps, hit_max = 0.0, 0, 0, False
    t0 = time.time()
    for images, target in bar:
        images = images.to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, cfg.train.amp):
            loss = c["criterion"](model(images), target)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"loss became {loss_value} at epoch {epoch + 1}, step {progress['step'] + 1}; stopped "
                f"without saving, {c['last_path']} still holds the last good state "
                "(lower optim.lr, enable optim.clip_grad, or use train.amp=none)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(ckpt.unwrap(model), step=progress["step"])
        progress["step"] += 1
        steps += 1
        batch = images.shape[0] * c["dist"].world_size
        seen += batch
        total_loss += loss_value
        if hasattr(bar, "set_postfix") and (steps % max(cfg.train.log_every, 1) == 0 or steps == 1):
            bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{seen / (time.time() - t0):.0f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        if cfg.train.max_steps and progress["step"] >= cfg.train.max_steps:
            hit_max = True
            break
    if hasattr(bar, "close"):
        bar.close()
    return total_loss / max(steps, 1), seen, hit_max


def _progress_bar(loader, epoch: int, epochs: int, enabled: bool):
    """tqdm over the loader on a terminal (img/s, loss and ETA); the bare loader otherwise."""
    if not enabled or not sys.stderr.isatty():
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                dynamic_ncols=True)

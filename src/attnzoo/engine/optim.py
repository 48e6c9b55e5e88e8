"""Optimizer and learning-rate schedule from the config.

The schedule is stepped once per optimizer step (warmup and cosine are smooth within an epoch);
it is a LambdaLR over a pure function of the step, or torch's OneCycleLR, so its state_dict is a
step counter and a resumed run continues exactly.
"""
import math

import torch
from timm.optim import param_groups_weight_decay

from .config import OptimConfig, ScheduleConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.decay_norm_and_bias:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    else:  # timm's split: 1-D parameters (norm weights, biases) get no weight decay
        groups = param_groups_weight_decay(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    opt = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return opt(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, cfg: ScheduleConfig, base_lr: float) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    epoch = step / steps_per_epoch
    warmup = cfg.warmup_epochs
    if warmup and epoch < warmup:
        start = cfg.warmup_lr / base_lr
        return start + (1 - start) * epoch / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.name == "multistep":
        return cfg.gamma ** sum(int(epoch) >= m for m in cfg.milestones)
    # cosine over the epochs after warmup, down to min_lr
    span = max(cfg.epochs - warmup, 1e-8)
    progress = min(max(epoch - warmup, 0.0) / span, 1.0)
    floor = cfg.min_lr / base_lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, cfg: ScheduleConfig, steps_per_epoch: int, base_lr: float):
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=base_lr, total_steps=cfg.epochs * steps_per_epoch,
            pct_start=cfg.pct_start)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg, base_lr))

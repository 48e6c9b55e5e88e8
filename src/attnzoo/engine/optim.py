"""Optimizer and learning-rate schedule from the config: timm's optimizer factory and schedulers.

The schedule is stepped once per optimizer step (warmup and cosine are smooth within an epoch) and
is a pure function of the step count, so its state_dict is that count and a resumed run continues
exactly. One-cycle is torch's OneCycleLR (timm has none).
"""
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, StepLRScheduler

from .config import OptimConfig, ScheduleConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, fused: bool = False) -> torch.optim.Optimizer:
    """SGD (Nesterov or classical momentum), Adam or AdamW. Unless `decay_norm_and_bias`, 1-D
    parameters (norm weights, biases) get no weight decay (timm's split).

    `fused`: torch's fused kernels (one launch for all parameters; with a GradScaler the
    inf/nan check of the gradients stays on the device instead of a host sync every step).
    """
    kwargs = {"betas": tuple(cfg.betas)} if cfg.name in ("adam", "adamw") else {}
    if fused:
        kwargs["fused"] = True  # torch's SGD, Adam and AdamW all have it; timm passes it through
    name = {"sgd": "sgd" if cfg.nesterov else "momentum"}.get(cfg.name, cfg.name)  # timm: sgd = Nesterov
    return create_optimizer_v2(model, name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum, filter_bias_and_bn=not cfg.decay_norm_and_bias,
                               **kwargs)


class PerStepSchedule:
    """A timm scheduler stepped once per optimizer step through torch's interface (`step()` with no
    argument): timm's schedulers are told the step count, torch's count themselves."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        self.scheduler.step_update(self.steps)

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"] if "steps" in state else state["last_epoch"]  # or torch's LambdaLR
        self.scheduler.step_update(self.steps)


def build_scheduler(optimizer, cfg: ScheduleConfig, steps_per_epoch: int, base_lr: float):
    """The schedule of `cfg` over `steps_per_epoch` optimizer steps an epoch: a linear warmup from
    `warmup_lr` over `warmup_epochs` (any but one-cycle), then constant, step or multistep decay
    counted from epoch 0, or a cosine from `base_lr` down to `min_lr` over the epochs after warmup."""
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=base_lr, total_steps=cfg.epochs * steps_per_epoch,
            pct_start=cfg.pct_start)
    warmup = {"warmup_t": cfg.warmup_epochs * steps_per_epoch, "warmup_lr_init": cfg.warmup_lr,
              "t_in_epochs": False}
    if cfg.name == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-8) * steps_per_epoch
        scheduler = CosineLRScheduler(optimizer, t_initial=span, lr_min=cfg.min_lr,
                                      warmup_prefix=True, **warmup)
    elif cfg.name == "multistep":
        # timm applies milestone m at step m - 1; + 1 makes the drop land on the epoch's first step
        scheduler = MultiStepLRScheduler(
            optimizer, decay_t=[m * steps_per_epoch + 1 for m in cfg.milestones],
            decay_rate=cfg.gamma, warmup_prefix=False, **warmup)
    else:  # step, or constant: a step schedule that never decays
        decay = cfg.gamma if cfg.name == "step" else 1.0
        scheduler = StepLRScheduler(optimizer, decay_t=cfg.step_size * steps_per_epoch,
                                    decay_rate=decay, warmup_prefix=False, **warmup)
    return PerStepSchedule(scheduler)

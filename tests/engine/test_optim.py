import math

import pytest
import torch

from attnzoo.engine.config import OptimConfig, ScheduleConfig
from attnzoo.engine.optim import build_optimizer, build_scheduler


def reference_lr(step: int, spe: int, cfg: ScheduleConfig, base: float) -> float:
    """The schedule as attnzoo defined it before it used timm's schedulers, written out."""
    epoch = step / spe
    if cfg.name == "onecycle":  # torch's OneCycleLR: cosine up from base/25, down to base/25e4
        up = cfg.pct_start * cfg.epochs * spe - 1
        start, end, pct = ((base / 25, base, step / up) if step <= up else
                           (base, base / 25e4, (step - up) / (cfg.epochs * spe - 1 - up)))
        return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return cfg.warmup_lr + (base - cfg.warmup_lr) * epoch / cfg.warmup_epochs
    if cfg.name == "constant":
        return base
    if cfg.name == "step":
        return base * cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.name == "multistep":
        return base * cfg.gamma ** sum(int(epoch) >= m for m in cfg.milestones)
    progress = min((epoch - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs), 1.0)
    return cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES = [
    ScheduleConfig(name="constant", epochs=4, warmup_epochs=1, warmup_lr=0.01),
    ScheduleConfig(name="step", epochs=10, step_size=3, gamma=0.5, warmup_epochs=2),
    ScheduleConfig(name="multistep", epochs=10, milestones=[4, 8], gamma=0.1, warmup_epochs=1),
    ScheduleConfig(name="multistep", epochs=9, milestones=[1, 5], gamma=0.2),
    ScheduleConfig(name="cosine", epochs=6, warmup_epochs=1.5, warmup_lr=0.0, min_lr=0.001),
    ScheduleConfig(name="cosine", epochs=4, min_lr=0.01),
    ScheduleConfig(name="onecycle", epochs=5, pct_start=0.3),
]


@pytest.mark.parametrize("cfg", SCHEDULES, ids=lambda c: f"{c.name}-warmup{c.warmup_epochs}")
def test_lr_at_every_step_matches_the_schedule_definition(cfg):
    spe, base = 6, 0.1
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(lr=base))
    sched = build_scheduler(opt, cfg, spe, base)
    lrs = []
    for _ in range(cfg.epochs * spe):
        lrs.append(opt.param_groups[0]["lr"])  # the lr this step trains with
        opt.step()
        sched.step()
    assert lrs == pytest.approx([reference_lr(s, spe, cfg, base) for s in range(len(lrs))],
                                rel=1e-12, abs=1e-15)


def test_fixed_points_of_the_schedules():
    cfg = ScheduleConfig(name="multistep", epochs=10, milestones=[4, 8], gamma=0.1, warmup_epochs=1)
    f = [reference_lr(s, 10, cfg, 1.0) for s in range(100)]
    assert f[0] == 0.0 and f[5] == pytest.approx(0.5)
    assert f[10] == 1.0 and f[39] == 1.0 and f[40] == pytest.approx(0.1) and f[80] == pytest.approx(0.01)
    cfg = ScheduleConfig(name="cosine", epochs=4, min_lr=0.01)
    assert [reference_lr(s, 5, cfg, 0.1) for s in (0, 10, 20)] == pytest.approx([0.1, 0.055, 0.01])


def _groups(opt):
    return sorted((g["weight_decay"], sorted(id(p) for p in g["params"])) for g in opt.param_groups)


def test_weight_decay_groups_and_optimizer_settings():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    conv, bn = model
    opt = build_optimizer(model, OptimConfig(weight_decay=1e-4, decay_norm_and_bias=False))
    assert isinstance(opt, torch.optim.SGD) and _groups(opt) == sorted(
        [(0.0, sorted(map(id, [conv.bias, bn.weight, bn.bias]))), (1e-4, [id(conv.weight)])])
    assert opt.defaults["nesterov"] is False and opt.defaults["momentum"] == 0.9
    opt = build_optimizer(model, OptimConfig(weight_decay=1e-4, nesterov=True, momentum=0.8))
    assert _groups(opt) == [(1e-4, sorted(id(p) for p in model.parameters()))]
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.8
    bn.weight.requires_grad_(False)  # frozen parameters are left out
    opt = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.05, betas=[0.8, 0.9]))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.9)
    assert _groups(opt) == [(0.05, sorted(id(p) for p in model.parameters() if p.requires_grad))]
    opt = build_optimizer(model, OptimConfig(name="adam", lr=1e-3, weight_decay=0.0))
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 1e-3
    assert _groups(opt) == [(0.0, sorted(id(p) for p in model.parameters() if p.requires_grad))]


@pytest.mark.parametrize("name", ["onecycle", "cosine", "multistep"])
def test_schedules_resume_from_state_dict(name):
    model = torch.nn.Linear(2, 2)
    cfg = ScheduleConfig(name=name, epochs=3, milestones=[1], warmup_epochs=0.5)
    opt = build_optimizer(model, OptimConfig(lr=0.1))
    sched = build_scheduler(opt, cfg, 4, 0.1)
    for _ in range(3):  # the next step is the first of epoch 1
        opt.step()
        sched.step()
    lr = opt.param_groups[0]["lr"]
    opt2 = build_optimizer(model, OptimConfig(lr=0.1))
    sched2 = build_scheduler(opt2, cfg, 4, 0.1)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == lr
    opt.step(); sched.step(); opt2.step(); sched2.step()  # noqa: E702
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] != lr


def test_resumes_the_step_count_of_a_checkpoint_written_before_timm_schedulers():
    cfg = ScheduleConfig(name="cosine", epochs=3)
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(lr=0.1))
    sched = build_scheduler(opt, cfg, 4, 0.1)
    sched.load_state_dict({"last_epoch": 6, "base_lrs": [0.1], "_step_count": 7})  # torch LambdaLR's
    assert sched.state_dict() == {"steps": 6}
    assert opt.param_groups[0]["lr"] == pytest.approx(reference_lr(6, 4, cfg, 0.1))

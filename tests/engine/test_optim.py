import pytest
import torch

from attnzoo.engine.config import OptimConfig, ScheduleConfig
from attnzoo.engine.optim import build_optimizer, build_scheduler, lr_factor


def test_multistep_with_warmup():
    cfg = ScheduleConfig(name="multistep", epochs=10, milestones=[4, 8], gamma=0.1, warmup_epochs=1)
    f = [lr_factor(s, 10, cfg, 0.1) for s in range(100)]
    assert f[0] == 0.0 and f[5] == pytest.approx(0.5)
    assert f[10] == 1.0 and f[39] == 1.0 and f[40] == pytest.approx(0.1) and f[80] == pytest.approx(0.01)


def test_cosine_reaches_floor():
    cfg = ScheduleConfig(name="cosine", epochs=4, min_lr=0.01)
    assert lr_factor(0, 5, cfg, 0.1) == pytest.approx(1.0)
    assert lr_factor(20, 5, cfg, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 5, cfg, 0.1) == pytest.approx(0.55)


def test_step_schedule():
    cfg = ScheduleConfig(name="step", epochs=10, step_size=3, gamma=0.5)
    assert [lr_factor(e * 2, 2, cfg, 1.0) for e in (0, 3, 6)] == [1.0, 0.5, 0.25]


def test_weight_decay_can_skip_norm_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, OptimConfig(weight_decay=1e-4, decay_norm_and_bias=False))
    decays = sorted((g["weight_decay"], len(g["params"])) for g in opt.param_groups)
    assert decays == [(0.0, 3), (1e-4, 1)]  # conv bias, bn weight, bn bias / conv weight
    opt = build_optimizer(model, OptimConfig(name="adamw", weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.05


def test_onecycle_and_lambda_schedules_resume_from_state_dict():
    model = torch.nn.Linear(2, 2)
    for name in ("onecycle", "cosine"):
        cfg = ScheduleConfig(name=name, epochs=3)
        opt = build_optimizer(model, OptimConfig(lr=0.1))
        sched = build_scheduler(opt, cfg, 4, 0.1)
        for _ in range(5):
            opt.step()
            sched.step()
        lr = opt.param_groups[0]["lr"]
        opt2 = build_optimizer(model, OptimConfig(lr=0.1))
        sched2 = build_scheduler(opt2, cfg, 4, 0.1)
        opt2.load_state_dict(opt.state_dict())
        sched2.load_state_dict(sched.state_dict())
        opt.step(); sched.step(); opt2.step(); sched2.step()  # noqa: E702
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) != lr

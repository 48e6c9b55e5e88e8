"""What one write of checkpoints/last.pt costs for the largest network, and the steps a stop loses.

    PYTHONPATH=src python benchmarks/checkpoint_save.py [--model senet_resnet152] [--device cpu]

Builds the network with the training loop's SGD (momentum) and an EMA, takes one step so the
optimizer holds its buffers, then times `save_checkpoint` (state dicts to host memory, torch.save
into a buffer, fsync'd write and rename beside the old file) `--repeats` times into a temporary
folder under --out. Writes benchmarks/results/checkpoint_save.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="senet_resnet152")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    from timm.utils import ModelEmaV3

    import attnzoo
    from attnzoo.engine import checkpoint as ckpt
    from attnzoo.engine.config import OptimConfig, ScheduleConfig
    from attnzoo.engine.optim import build_optimizer, build_scheduler
    from attnzoo.engine.train import TrainState, save_checkpoint

    device = torch.device(args.device)
    model = attnzoo.create_model(args.model).to(device)
    optimizer = build_optimizer(model, OptimConfig())
    scheduler = build_scheduler(optimizer, ScheduleConfig(), 100, 0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    ema = ModelEmaV3(model, decay=0.999)
    model(torch.randn(2, 3, 64, 64, device=device)).logsumexp(1).mean().backward()
    optimizer.step()  # the momentum buffers exist, as in any checkpoint after the first step
    ema.update(model)
    params = sum(p.numel() for p in model.parameters())
    times, writes = [], []
    real_write = ckpt.atomic_write

    def timed_write(*a, **kw):  # the file part of a save: write, fsync, rename
        t0 = time.perf_counter()
        real_write(*a, **kw)
        writes.append(time.perf_counter() - t0)

    ckpt.atomic_write = timed_write
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        path = Path(tmp) / "checkpoints" / "last.pt"
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            save_checkpoint(path, model, optimizer, scheduler, scaler, ema, TrainState(step=1), {"model": {}})
            times.append(time.perf_counter() - t0)
        size = path.stat().st_size
    result = {"model": args.model, "params": params, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "file_mb": size / 1e6, "save_s_median": statistics.median(times), "save_s_all": times,
              "write_fsync_s_median": statistics.median(writes),
              "mb_per_s": size / 1e6 / statistics.median(times)}
    out = Path(args.out)
    (out / "checkpoint_save.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "checkpoint_save.md").write_text(
        "| model | params | device | last.pt | save (median) | of which write+fsync | throughput |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {args.model} | {params / 1e6:.1f}M | {result['device_name']} | {result['file_mb']:.0f} MB | "
        f"{result['save_s_median']:.2f} s | {result['write_fsync_s_median']:.2f} s | "
        f"{result['mb_per_s']:.0f} MB/s |\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

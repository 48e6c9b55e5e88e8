"""The image-folder loader against timm's `create_loader` on the same generated JPEG folder (issue 18).

Both sides read the same JPEG files with the same DataLoader workers, batch size and transforms:
RandomResizedCrop(224, bilinear) + horizontal flip in the workers, uint8 batches handed to the
main process, which converts and normalises them on the device (here the CPU: `--device cpu`).
- attnzoo: `build_data` (imagefolder) + `build_loader(..., device=...)`, augment "imagenet";
- timm: `ImageDataset` + `create_loader(is_training=True, use_prefetcher=True, color_jitter=None,
  persistent_workers=True, device=...)` (its PrefetchLoader normalises in the main process).
Each side builds its loader once and runs `--epochs` epochs (worker start-up included, as a run sees
it), `--repeats` times in alternation; the best repeat counts. Reported per side: images/s and the
CPU time the training (main) process spends per batch (`time.process_time`, workers excluded).
`--before-src DIR` also measures the attnzoo loader of another source tree (e.g. before a change).
Writes benchmarks/results/loader_throughput.json and .md; asserts nothing.

    PYTHONPATH=src python benchmarks/loader_throughput.py [--num-images 320] [--workers 2] \
        [--batch-size 32] [--epochs 3] [--repeats 3] [--before-src /path/to/old/src]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def make_folder(root: Path, num_images: int, seed: int = 0) -> Path:
    """root/{train,val}/<class>/*.jpg: `num_images` training JPEGs of 320x400 (ImageNet-like sizes)
    with noise and gradients, so decoding costs what a photo's does; 8 per class in val."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = ("a", "b", "c", "d")
    for split, n in (("train", num_images), ("val", 8 * len(classes))):
        for i in range(n):
            d = root / split / classes[i % len(classes)]
            d.mkdir(parents=True, exist_ok=True)
            h, w = 320, 400
            grad = np.linspace(0, 255, w)[None, :, None] * rng.random(3)[None, None, :]
            img = np.clip(grad + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


def _time_epochs(loader, epochs: int, set_epoch) -> dict:
    """Wall time, main-process CPU time and batches of `epochs` passes over `loader`."""
    batches = images = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        set_epoch(epoch)
        for x, _ in loader:
            assert x.dtype == torch.float32
            batches += 1
            images += x.shape[0]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"img_per_s": images / wall, "cpu_ms_per_batch": 1000 * cpu / batches, "batches": batches,
            "wall_s": wall}


def measure_attnzoo(root: Path, args) -> dict:
    from attnzoo.data import build_data, build_loader
    from attnzoo.engine.config import DataConfig

    cfg = DataConfig(name="imagefolder", root=str(root), img_size=args.img_size, batch_size=args.batch_size,
                     workers=args.workers, augment="imagenet")
    bundle = build_data(cfg, train=True)
    try:
        loader = build_loader(bundle.train, bundle, cfg, train=True, seed=0, device=torch.device(args.device))
    except TypeError:  # a version of build_loader without `device` for file datasets
        loader = build_loader(bundle.train, bundle, cfg, train=True, seed=0)
    return _time_epochs(loader, args.epochs, loader.set_epoch)


def measure_timm(root: Path, args) -> dict:
    from timm.data import ImageDataset, create_loader

    dataset = ImageDataset(str(root / "train"))
    loader = create_loader(dataset, input_size=(3, args.img_size, args.img_size), batch_size=args.batch_size,
                           is_training=True, use_prefetcher=True, color_jitter=None, interpolation="bilinear",
                           num_workers=args.workers, pin_memory=args.device == "cuda",
                           persistent_workers=True, device=torch.device(args.device))
    # timm's own train.py drops the last partial batch as attnzoo's loader does: compare whole batches
    return _time_epochs(loader, args.epochs, lambda e: None)


def measure_before(root: Path, args) -> dict:
    """The attnzoo loader of `--before-src`, in a fresh process importing that tree."""
    cmd = [sys.executable, __file__, "--side", "attnzoo", "--folder", str(root), "--num-images",
           str(args.num_images), "--workers", str(args.workers), "--batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--img-size", str(args.img_size), "--threads", str(args.threads),
           "--device", args.device]
    env = dict(os.environ, PYTHONPATH=str(args.before_src))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=320)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--before-src", type=Path, help="another attnzoo source tree to measure as 'before'")
    p.add_argument("--side", choices=("all", "attnzoo", "timm"), default="all", help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.side == "attnzoo":  # one measurement, for --before-src
        print(json.dumps(measure_attnzoo(args.folder, args)))
        return
    with tempfile.TemporaryDirectory(prefix="attnzoo-loader-") as tmp:
        root = make_folder(Path(tmp), args.num_images)
        sides = {"attnzoo": measure_attnzoo, "timm": measure_timm}
        if args.before_src:
            sides["attnzoo (before)"] = measure_before
        runs = {name: [] for name in sides}
        for _ in range(args.repeats):  # alternate, so a busy machine slows every side alike
            for name, fn in sides.items():
                runs[name].append(fn(root, args))
                print(name, {k: round(v, 2) for k, v in runs[name][-1].items()}, flush=True)
    best = {name: max(rs, key=lambda r: r["img_per_s"]) for name, rs in runs.items()}
    ratio = best["attnzoo"]["img_per_s"] / best["timm"]["img_per_s"]
    import timm

    result = {"benchmark": "loader_throughput", "device": args.device, "platform": platform.platform(),
              "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "torch": torch.__version__, "timm": timm.__version__, "config": {k: str(v) for k, v in vars(args).items()},
              "best": best, "runs": runs, "attnzoo_vs_timm": ratio, "target": ">= 1.0x timm create_loader"}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "loader_throughput.json").write_text(json.dumps(result, indent=2))
    rows = [f"| {name} | {r['img_per_s']:.1f} | {r['cpu_ms_per_batch']:.1f} |" for name, r in best.items()]
    md = "\n".join([
        "# Image-folder loader vs timm create_loader", "",
        f"{args.num_images} JPEGs 400x320 -> RandomResizedCrop {args.img_size} + flip, batch {args.batch_size}, "
        f"{args.workers} workers, {args.epochs} epochs a repeat (worker start-up included), best of "
        f"{args.repeats}, device {args.device}, {args.threads} main-process thread(s); torch {torch.__version__}, "
        f"timm {timm.__version__}, {result['cpus']} CPUs.", "",
        "| loader | img/s | main-process CPU ms / batch |", "|---|---|---|", *rows, "",
        f"attnzoo / timm: **{ratio:.2f}x** (target >= 1.0x).", ""])
    (args.out_dir / "loader_throughput.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

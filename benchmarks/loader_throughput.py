"""The image-folder loader against timm's `create_loader` on the same generated JPEG folder (issue 18).

Both sides read the same JPEG files with the same DataLoader workers, batch size and transforms:
RandomResizedCrop(224, bilinear) + horizontal flip in the workers, uint8 batches handed to the
main process, which converts and normalises them on the device (here the CPU: `--device cpu`).
- attnzoo: `build_data` (imagefolder) + `build_loader(..., device=...)`, augment "imagenet";
- timm: `ImageDataset` + `create_loader(is_training=True, use_prefetcher=True, color_jitter=None,
  persistent_workers=True, device=...)` (its PrefetchLoader normalises in the main process).
Each side builds its loader once and runs `--epochs` epochs (worker start-up included, as a run sees
it), `--repeats` times in alternation, each time in a fresh process (neither side inherits the heap
the other left). Reported per side: images/s (best and median repeat), and as
medians the CPU time the training (main) process spends per batch (`time.process_time`, workers
excluded), the CPU time of its DataLoader workers per batch (/proc) and the main process's minor
page faults per batch (a fresh float batch costs up to ~4700 of them).
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
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def make_folder(root: Path, n_train: int, n_val: int = 32, classes: int = 4, seed: int = 0) -> Path:
    """root/{train,val}/c<k>/*.jpg: JPEGs of 320x400 (ImageNet-like sizes) with noise and gradients,
    so decoding costs what a photo's does; the images go round the classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            h, w = 320, 400
            grad = np.linspace(0, 255, w)[None, :, None] * rng.random(3)[None, None, :]
            img = np.clip(grad + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


def _workers_cpu() -> dict:
    """{pid: CPU seconds (user + system)} of this process's live children (the loader's workers), from /proc."""
    cpu, me, tick = {}, str(os.getpid()), os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on
        except OSError:  # ended meanwhile
            continue
        if fields[1] == me:  # ppid
            cpu[stat.parent.name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return cpu


def _time_epochs(loader, epochs: int, set_epoch) -> dict:
    """Wall time, CPU time (main process; workers) and page faults (main process) of `epochs` passes
    over `loader`, per batch."""
    batches = images = 0
    faults, workers = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, _workers_cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        set_epoch(epoch)
        for x, _ in loader:
            assert x.dtype == torch.float32
            batches += 1
            images += x.shape[0]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    workers = sum(s - workers.get(pid, 0) for pid, s in _workers_cpu().items())  # persistent: still alive
    return {"img_per_s": images / wall, "cpu_ms_per_batch": 1000 * cpu / batches,
            "workers_cpu_ms_per_batch": 1000 * workers / batches, "page_faults_per_batch": faults / batches,
            "batches": batches, "wall_s": wall}


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


MEASURE = {"attnzoo": measure_attnzoo, "timm": measure_timm}


def measure_apart(side: str, root: Path, args, src=None) -> dict:
    """One measurement of `side` in a fresh Python process (importing attnzoo from `src` when given):
    each side's main process starts with a clean heap, whatever the other side left behind."""
    cmd = [sys.executable, __file__, "--side", side, "--folder", str(root), "--num-images",
           str(args.num_images), "--workers", str(args.workers), "--batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--img-size", str(args.img_size), "--threads", str(args.threads),
           "--device", args.device]
    env = dict(os.environ, PYTHONPATH=str(src)) if src else None
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
    p.add_argument("--side", choices=("all", *MEASURE), default="all", help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--note", default="", help="a line for the report, e.g. how busy the machine was")
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.side != "all":  # one measurement, in the process measure_apart started
        print(json.dumps(MEASURE[args.side](args.folder, args)))
        return
    with tempfile.TemporaryDirectory(prefix="attnzoo-loader-") as tmp:
        root = make_folder(Path(tmp), args.num_images)
        sides = {"attnzoo": ("attnzoo", None), "timm": ("timm", None)}
        if args.before_src:
            sides["attnzoo (before)"] = ("attnzoo", args.before_src)
        runs = {name: [] for name in sides}
        for _ in range(args.repeats):  # alternate, so a busy machine slows every side alike
            for name, (side, src) in sides.items():
                runs[name].append(measure_apart(side, root, args, src))
                print(name, {k: round(v, 2) for k, v in runs[name][-1].items()}, flush=True)
    best = {name: max(rs, key=lambda r: r["img_per_s"]) for name, rs in runs.items()}
    ratio = best["attnzoo"]["img_per_s"] / best["timm"]["img_per_s"]
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    ratio_median = med["attnzoo"]["img_per_s"] / med["timm"]["img_per_s"]
    import timm

    result = {"benchmark": "loader_throughput", "device": args.device, "platform": platform.platform(),
              "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "torch": torch.__version__, "timm": timm.__version__, "config": {k: str(v) for k, v in vars(args).items()},
              "best": best, "median": med, "runs": runs, "attnzoo_vs_timm": ratio, "attnzoo_vs_timm_median": ratio_median, "target": ">= 1.0x timm create_loader"}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "loader_throughput.json").write_text(json.dumps(result, indent=2))
    rows = [f"| {name} | {best[name]['img_per_s']:.1f} | {m['img_per_s']:.1f} | {m['cpu_ms_per_batch']:.1f} | "
            f"{m['workers_cpu_ms_per_batch']:.1f} | {m['page_faults_per_batch']:.0f} |" for name, m in med.items()]
    md = "\n".join([
        "# Image-folder loader vs timm create_loader", "",
        f"{args.num_images} JPEGs 400x320 -> RandomResizedCrop {args.img_size} + flip, batch {args.batch_size}, "
        f"{args.workers} workers, {args.epochs} epochs a repeat (worker start-up included), best of "
        f"{args.repeats}, device {args.device}, {args.threads} main-process thread(s); torch {torch.__version__}, "
        f"timm {timm.__version__}, {result['cpus']} CPUs. Each measurement in a fresh process.",
        *([args.note] if args.note else []), "",
        "| loader | img/s (best) | img/s (median) | main-process CPU ms / batch | workers' CPU ms / batch | "
        "main-process page faults / batch |", "|---|---|---|---|---|---|", *rows, "",
        "CPU times and page faults: medians over the repeats (CPU time is less sensitive to a busy machine "
        "than images/s).", "",
        f"attnzoo / timm: **{ratio:.2f}x** best repeats, {ratio_median:.2f}x median repeats (target >= 1.0x).", ""])
    (args.out_dir / "loader_throughput.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

"""Batched in-memory augmentation vs torchvision per-image transforms (issue 2's benchmark).

Both sides read the same 32x32 uint8 images (the embedded synthetic dataset) and produce the same
batches: float32 (128, 3, 32, 32), random crop with padding 4, horizontal flip, normalise.
- per-image: a Dataset yielding PIL images (as torchvision's CIFAR10 does) with
  RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, through a DataLoader with
  2 workers, shuffle, drop_last;
- batched: attnzoo's in-memory loader (`attnzoo.data.build_loader`), whole uint8 batches in the
  main process.
Each side runs a full epoch `--repeats` times (worker start-up included, as a run sees it); the
best epoch counts. Writes benchmarks/results/augmentation.json and .md; asserts nothing.

    python benchmarks/augmentation.py [--num-images 10000] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset


class PILImages(Dataset):
    """The uint8 images as PIL images, per item, like torchvision.datasets.CIFAR10."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform):
        self.hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = targets.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.hwc[i])), self.targets[i]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_epochs(make_iter, repeats: int):
    best, shape, n = float("inf"), None, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = 0
        for x, _ in make_iter():
            n += x.shape[0]
            shape = tuple(x.shape), str(x.dtype)
        best = min(best, time.perf_counter() - t0)
    return n / best, best, shape, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the main process (batched side); 1 = half the cores the per-image side uses")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    from torchvision import transforms as T

    from attnzoo.data import build_data, build_loader
    from attnzoo.engine.config import DataConfig

    torch.set_num_threads(args.threads)
    cfg = DataConfig(name="synthetic", batch_size=args.batch_size, augment="crop_flip", workers=2,
                     options={"num_train": args.num_images, "num_test": 0})
    bundle = build_data(cfg)
    ds = bundle.train

    batched = build_loader(ds, bundle, cfg, train=True, seed=0)
    epoch = iter(range(10 ** 6))

    def batched_epoch():
        batched.set_epoch(next(epoch))
        return iter(batched)

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(bundle.mean, bundle.std)])
    per_image_ds = PILImages(ds.images, ds.targets, tf)

    def per_image_epoch():
        return iter(DataLoader(per_image_ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                               num_workers=2))

    b_ips, b_t, b_shape, b_n = time_epochs(batched_epoch, args.repeats)
    p_ips, p_t, p_shape, p_n = time_epochs(per_image_epoch, args.repeats)
    assert b_shape == p_shape and b_n == p_n, (b_shape, p_shape, b_n, p_n)
    result = {
        "benchmark": "augmentation",
        "images_per_epoch": b_n, "batch_size": args.batch_size, "image_size": 32, "repeats": args.repeats,
        "output": {"shape": list(b_shape[0]), "dtype": b_shape[1]},
        "batched_in_memory": {"images_per_s": round(b_ips, 1), "best_epoch_s": round(b_t, 4),
                              "process": f"main process, torch threads {args.threads}"},
        "torchvision_per_image": {"images_per_s": round(p_ips, 1), "best_epoch_s": round(p_t, 4),
                                  "process": "DataLoader, 2 workers"},
        "ratio": round(b_ips / p_ips, 2),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "augmentation.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    md = [
        "# Augmentation: batched in-memory vs torchvision per-image",
        "",
        f"{b_n} images of 32x32 per epoch, batch {args.batch_size}, output {list(b_shape[0])} {b_shape[1]}; "
        f"random crop (padding 4) + flip + normalise; best of {args.repeats} full epochs.",
        "",
        "| path | images/s | epoch (s) | runs in |",
        "|---|---:|---:|---|",
        f"| attnzoo batched (uint8 batches) | {b_ips:,.0f} | {b_t:.3f} | {result['batched_in_memory']['process']} |",
        f"| torchvision per image | {p_ips:,.0f} | {p_t:.3f} | DataLoader, 2 workers |",
        "",
        f"**Ratio: {result['ratio']}x** (target >= 10x).",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, 1-minute load average at the end "
        f"{m['load_average_1m_at_end']} (shared machine), {m['platform']}, Python {m['python']}, torch {m['torch']}.",
        "",
    ]
    (out / "augmentation.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

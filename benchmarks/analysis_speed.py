"""Speed of `attnzoo.analysis.run_analysis` on 10,000 synthetic 32 px images, ResNet-20 (issue 7).

A ResNet-20 (random weights: speed does not depend on them) is saved as a run checkpoint in a
temporary folder; `run_analysis` then computes Grad-CAM and Eigen-CAM maps of every image of the
`test` split, the bias statistics at 9 thresholds, the contextual-bias pass over `test_swapped`
(another 10,000 images, prediction only), the figures and the report. Reported: the wall time of
each phase, images per second of the map + statistics pass, the total, and the CPU time of the
whole call (the wall time on a machine shared with other jobs includes waiting for the CPU). Writes
benchmarks/results/analysis_speed.json and .md; asserts nothing.

    python benchmarks/analysis_speed.py [--num-images 10000] [--threads 2] [--batch-size 500]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--model", default="resnet20_cifar")
    ap.add_argument("--methods", default="gradcam,eigencam")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "analysis_speed"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import attnzoo
    from attnzoo.analysis import run_analysis
    from attnzoo.data import build_data
    from attnzoo.engine.checkpoint import save_weights
    from attnzoo.engine.config import config_from_dict, config_to_dict

    data = {"name": "synthetic", "options": {"num_train": 8, "num_test": args.num_images}}
    cfg = config_from_dict({"name": "speed", "model": {"name": args.model, "kwargs": {"num_classes": 10}},
                            "data": data})
    torch.manual_seed(0)
    model = attnzoo.create_model(args.model, num_classes=10)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "run" / "checkpoints" / "best.safetensors"
        save_weights(ckpt, model, config_to_dict(cfg))
        t = time.perf_counter()
        build_data(cfg.data, train=False)
        t_data = time.perf_counter() - t  # generation, paid again inside run_analysis
        t, c = time.perf_counter(), time.process_time()
        res = run_analysis(ckpt, methods=tuple(args.methods.split(",")), batch_size=args.batch_size)
        total, cpu = time.perf_counter() - t, time.process_time() - c
    timing = res["timing_s"]
    maps_s = timing["maps_and_stats"]
    result = {
        "model": args.model, "num_images": args.num_images, "img_size": 32, "methods": args.methods,
        "thresholds": len(res["bias"][args.methods.split(",")[0]]["thresholds"]),
        "threads": args.threads, "batch_size": args.batch_size,
        "data_generation_s": round(t_data, 2),
        "maps_and_stats_s": maps_s, "maps_and_stats_cpu_s": timing["maps_and_stats_cpu"], "maps_and_stats_img_per_s": round(args.num_images / maps_s, 1),
        "run_analysis_total_s": round(total, 2), "run_analysis_cpu_s": round(cpu, 2),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Analysis speed (issue 7)", "",
          f"`run_analysis` on {args.num_images} synthetic 32 px images, {args.model}, "
          f"maps: {args.methods}, {result['thresholds']} thresholds, {args.threads} threads, "
          f"batch {args.batch_size}; machine load average at the end: {result['load_average_1min']}.", "",
          "| phase | seconds |", "|---|---|",
          f"| data generation (test + test_swapped) | {result['data_generation_s']} |",
          f"| maps + bias statistics + gates ({args.num_images} images) | {maps_s} "
          f"({result['maps_and_stats_img_per_s']} img/s); CPU time {timing['maps_and_stats_cpu']} |",
          f"| whole run_analysis (load, maps, test_swapped pass, figures, report) | "
          f"{result['run_analysis_total_s']} |",
          f"| CPU time of the whole run_analysis (all threads) | {result['run_analysis_cpu_s']} |", "",
          "On a shared machine the wall times include waiting for the CPU; the CPU time is what the "
          "analysis itself consumed.", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""Cost of the IDA head next to its backbone: forward + backward time of the interventional
classifier against the ResNet-101 backbone, in the same run, on the same device.

    python benchmarks/ida_head.py [--batch 4] [--size 448] [--rounds 3] [--device cpu]

The backbone is `ida_resnet101`'s (timm ResNet-101 without classifier, training mode); the head
gets the backbone's feature map (N, 2048, 14, 14) as a leaf that requires grad, so its backward
also computes the gradient the backbone would receive. Timings alternate between the parts in
every round (so drift of a shared machine hits both alike) and the median is reported. Also
timed for context: the light IDA head and the GAP + linear head of `mlc_baseline`.
Writes benchmarks/results/ida_head.{json,md}. Target: heavy head / backbone < 10%.
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from attnzoo.layers.intervention import InterventionalClassifier
from attnzoo.models.ida import create_backbone


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ida_head")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    backbone = create_backbone("resnet101").to(device).train()
    heads = {
        "ida_heavy": InterventionalClassifier(2048, args.classes, num_heads=4, heavy=True),
        "ida_light": InterventionalClassifier(2048, args.classes, num_heads=4, heavy=False),
        "gap_linear": torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                          torch.nn.Linear(2048, args.classes)),
    }
    heads = {k: v.to(device).train() for k, v in heads.items()}
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    with torch.no_grad():
        feats = backbone.forward_features(x)
    grad_feats = torch.randn_like(feats)
    grad_logits = torch.randn(args.batch, args.classes, device=device)

    def run_backbone():
        backbone.zero_grad(set_to_none=True)
        backbone.forward_features(x).backward(grad_feats)

    def run_head(head):
        def step():
            head.zero_grad(set_to_none=True)
            f = feats.detach().requires_grad_()
            head(f).backward(grad_logits)
        return step

    parts = {"backbone_resnet101": run_backbone, **{k: run_head(h) for k, h in heads.items()}}
    for fn in parts.values():  # warm-up
        fn()
    times = {k: [] for k in parts}
    for _ in range(args.rounds):
        for name, fn in parts.items():
            times[name].append(timed(fn, device))
    median = {k: statistics.median(v) for k, v in times.items()}
    base = median["backbone_resnet101"]
    result = {
        "what": "forward + backward time, training mode, float32",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} logical CPUs"
                   f" (shared), torch {torch.__version__}, {torch.get_num_threads()} threads",
        "batch": args.batch, "size": args.size, "classes": args.classes, "rounds": args.rounds,
        "feature_map": list(feats.shape),
        "seconds_median": median, "seconds_all": times,
        "ratio_to_backbone": {k: median[k] / base for k in heads},
        "params": {"backbone_resnet101": sum(p.numel() for p in backbone.parameters()),
                   **{k: sum(p.numel() for p in h.parameters()) for k, h in heads.items()}},
        "target": "ida_heavy / backbone < 0.10",
    }
    result["pass"] = result["ratio_to_backbone"]["ida_heavy"] < 0.10
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# IDA head cost next to the ResNet-101 backbone ({result['device']})", "",
             f"Forward + backward, training mode, float32, batch {args.batch}, {args.size} px, "
             f"{args.classes} classes, median of {args.rounds} alternating rounds. Machine: {result['machine']}.",
             "", "| part | params | seconds | ratio to backbone |", "|---|---:|---:|---:|"]
    for k in parts:
        ratio = "1" if k == "backbone_resnet101" else f"{result['ratio_to_backbone'][k]:.3f}"
        lines.append(f"| {k} | {result['params'][k] / 1e6:.2f}M | {median[k]:.3f} | {ratio} |")
    lines += ["", f"Target: IDA (heavy) head under 10% of the backbone: "
                  f"{'met' if result['pass'] else 'NOT met'} ({100 * result['ratio_to_backbone']['ida_heavy']:.1f}%)."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

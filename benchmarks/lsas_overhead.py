"""LSAS overhead: a training step of `lsas_senet164_cifar` against the same network with plain SE
in the same positions (`order=0`: SE in the third stage only), in the same run.

    python benchmarks/lsas_overhead.py [--batch 64] [--reps 10] [--threads N]

Steps of the two networks alternate (so load on a shared machine hits both alike); each step is
forward + cross-entropy + backward + SGD update on random CIFAR-size data. Reports the median
step time of each and their ratio (target: LSAS within 5%, ratio <= 1.05), plus the allstages
variants (LSAS-SE vs SE in every block) and one block alone at the third stage's shape (many
repetitions: the overhead itself, less exposed to machine noise). Writes benchmarks/results/lsas_overhead.{json,md}.
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from attnzoo.layers.factory import create_block
from attnzoo.models import senet_cifar


def make_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0

    return step


class BlockProbe(torch.nn.Module):
    """One attention block at the third stage's shape (C=256, 8x8) with a linear read-out."""

    def __init__(self, attn, **kw):
        super().__init__()
        self.attn = create_block(attn, 256, **kw)
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(self.attn(x).mean((2, 3)))


def compare(pairs, batch, reps, warmup, shape=(3, 32, 32), verbose=True):
    torch.manual_seed(0)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    steps = {label: make_step(build(), x, y) for label, build in pairs}
    times = {label: [] for label in steps}
    for i in range(warmup + reps):
        for label, step in (steps.items() if i % 2 == 0 else reversed(steps.items())):
            t = step()
            if verbose:
                print(f"  step {i} {label}: {t * 1e3:.0f} ms", file=sys.stderr, flush=True)
            if i >= warmup:
                times[label].append(t)
    return {label: {"median_s": statistics.median(ts), "min_s": min(ts), "steps": len(ts)}
            for label, ts in times.items()}


def render(meta, rows) -> str:
    """The markdown table; the block row also gives LSAS's added time per block and what that
    adds up to over the 18 (stage 3) or 54 (all stages) LSAS blocks of ResNet-164."""
    lines = ["# LSAS overhead: training step, ResNet-164 on 32x32, CPU", "",
             f"batch {meta['batch']}, {meta['reps']} timed network steps (block: more) after "
             f"{meta['warmup']} warm-up, SE and LSAS alternating, {meta['threads']} thread(s), "
             f"torch {meta['torch']}; median step time (min in the ratio column beside it).", "",
             "| case | SE (ms) | LSAS (ms) | LSAS / SE (median) | LSAS / SE (min) | within 5% |",
             "|---|---:|---:|---:|---:|---|"]
    per_block = None
    for r in rows:
        se, ls = r["se"]["median_s"] * 1e3, r["lsas"]["median_s"] * 1e3
        if r["case"].startswith("block"):
            per_block = ls - se
            verdict = f"+{per_block:.1f} ms a block"
        else:
            verdict = "yes" if r["within_5_percent"] else "no"
        lines.append(f"| {r['case']} | {se:.1f} | {ls:.1f} | {r['ratio_lsas_over_se']:.3f} "
                     f"| {r['ratio_of_min']:.3f} | {verdict} |")
    nets = [r for r in rows if not r["case"].startswith("block")]
    if per_block is not None and nets:
        lines += ["", "Added time implied by the block measurement (less exposed to machine noise "
                  "than whole steps):", ""]
        for r in nets:
            blocks = 18 if r["case"].startswith("stage3") else 54
            est = per_block * blocks
            lines.append(f"- {r['case'].split(' (')[0]}: {blocks} LSAS blocks x {per_block:.1f} ms = "
                         f"{est:.0f} ms, {100 * est / (r['se']['median_s'] * 1e3):.1f}% of the SE step")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--cases", nargs="+", default=["block", "stage3", "allstages"],
                    choices=["block", "stage3", "allstages"])
    ap.add_argument("--block-reps", type=int, default=50)
    ap.add_argument("--out", default="benchmarks/results/lsas_overhead")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the markdown of an earlier run")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        Path(args.render).with_suffix(".md").write_text(render(data["meta"], data["rows"]))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    cases = {
        "block (one LSAS-SE vs one SE block, 256 channels, 8x8)": [
            ("se", lambda: BlockProbe("lsas_se", order=0)),
            ("lsas", lambda: BlockProbe("lsas_se", order=1))],
        "stage3 (the seed's lsas_senet164_cifar vs SE in stage 3)": [
            ("se", lambda: senet_cifar.lsas_senet164_cifar(order=0)),
            ("lsas", lambda: senet_cifar.lsas_senet164_cifar(order=1))],
        "allstages (lsas_senet164_allstages_cifar vs senet164_cifar)": [
            ("se", lambda: senet_cifar.senet164_cifar()),
            ("lsas", lambda: senet_cifar.lsas_senet164_allstages_cifar(order=1))],
    }
    rows = []
    for name, pairs in cases.items():
        if name.split()[0] not in args.cases:
            continue
        block = name.startswith("block")
        res = compare(pairs, args.batch, args.block_reps if block else args.reps, args.warmup,
                      (256, 8, 8) if block else (3, 32, 32), verbose=not block)
        ratio = res["lsas"]["median_s"] / res["se"]["median_s"]
        rows.append({"case": name, "se": res["se"], "lsas": res["lsas"], "ratio_lsas_over_se": ratio,
                     "ratio_of_min": res["lsas"]["min_s"] / res["se"]["min_s"],
                     "within_5_percent": None if block else ratio <= 1.05})
        print(f"{name}: SE {res['se']['median_s'] * 1e3:.0f} ms, LSAS {res['lsas']['median_s'] * 1e3:.0f} ms,"
              f" ratio {ratio:.3f}", flush=True)
    meta = {"batch": args.batch, "cases": args.cases, "reps": args.reps, "block_reps": args.block_reps,
            "warmup": args.warmup, "device": "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "processor": platform.processor() or platform.platform()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(render(meta, rows))
    print(f"wrote {out}.json and {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

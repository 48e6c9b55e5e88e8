"""Peak memory and time of LESA-ResNet-50 training steps and eval forwards: lean vs straightforward.

    python benchmarks/lesa_memory.py [--batch 8] [--img 224] [--steps 3] [--threads N]

Two implementations of the same network (`lesa_kwargs.impl`, see `attnzoo.ops.lesa`):

* ``reference`` -- the straightforward formulation of the official code: every (channels x HW x HW)
  relative-embedding tensor materialised, similarity terms concatenated, BatchNorm, sum;
* ``lean`` -- attnzoo's default (`attnzoo.ops.lesa_flat`): one autograd function from the qkv
  convolution's output to the aggregated values that saves only that output, the tables and
  per-head statistics; BatchNorm statistics of the similarity terms and the BatchNorm parts of
  their gradient in closed form from (c x c) Gram matrices; the batch processed a few samples at a
  time through reused work buffers; in eval, BatchNorm folded into scales.

Each measurement runs in a fresh process (CPU) with glibc's mmap threshold lowered so that freed
tensors leave the resident set at once. Training: SGD step (forward, cross entropy, backward,
update) on random data; one warm-up step allocates gradients and momentum, then the peak resident
set of the next step above the resident set before it (Linux VmHWM, reset through
/proc/self/clear_refs) and the median wall and CPU time of `--steps` steps. One torch thread by
default: on a shared machine, several threads spend most of their time waiting on each other. Eval: the same for a
no-grad forward in eval mode. Writes benchmarks/results/lesa_memory.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS


def worker(impl: str, mode: str, batch: int, img: int, steps: int, threads: int) -> dict:
    import torch

    from attnzoo.models.lesa import lesa_resnet50

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = lesa_resnet50(img_size=img, lesa_kwargs={"impl": impl})
    x = torch.randn(batch, 3, img, img)
    y = torch.randint(0, 1000, (batch,))
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

        def step():
            opt.zero_grad(set_to_none=False)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    step()  # warm-up: gradients, momentum buffers, allocator state
    before = _status_kb("VmRSS")
    _reset_peak()
    times, cpu = [], []
    for i in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if i == 0:
            peak = _status_kb("VmHWM")
    return {"impl": impl, "mode": mode, "peak_mib": (peak - before) / 1024, "rss_before_mib": before / 1024,
            "time_s": statistics.median(times), "cpu_time_s": statistics.median(cpu), "times_s": times,
            "cpu_times_s": cpu}


def run_worker(impl, mode, args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--worker", impl, "--mode", mode, "--batch", str(args.batch),
           "--img", str(args.img), "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared machine more threads wait on each other)")
    p.add_argument("--modes", default="train,eval")
    p.add_argument("--worker", choices=("reference", "lean"), help=argparse.SUPPRESS)
    p.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS / "lesa_memory.json")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.mode, args.batch, args.img, args.steps, args.threads)))
        return

    import torch

    rows = {}
    for mode in args.modes.split(","):
        for impl in ("reference", "lean"):
            print(f"{mode} {impl} ...", file=sys.stderr, flush=True)
            rows[(mode, impl)] = run_worker(impl, mode, args)
    result = {"model": "lesa_resnet50", "batch": args.batch, "img_size": args.img, "device": "cpu",
              "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "measurements": list(rows.values()), "ratios": {}}
    for mode in args.modes.split(","):
        ref, lean = rows[(mode, "reference")], rows[(mode, "lean")]
        result["ratios"][mode] = {"peak_memory_lean_over_reference": lean["peak_mib"] / ref["peak_mib"],
                                  "time_lean_over_reference": lean["time_s"] / ref["time_s"],
                                  "cpu_time_lean_over_reference": lean["cpu_time_s"] / ref["cpu_time_s"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    lines = [f"# LESA-ResNet-50 memory and time, batch {args.batch}, {args.img} px, CPU ({args.threads} threads)",
             "",
             "Peak = peak resident set of one step above the resident set before it (fresh process per row);",
             "time = median wall and CPU (process) time of a step; ratios are lean / reference.",
             "",
             "| mode | implementation | peak MiB | wall s | CPU s | peak ratio | wall ratio | CPU ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (mode, impl), r in rows.items():
        ratio = result["ratios"][mode]
        pr = f"{ratio['peak_memory_lean_over_reference']:.2f}" if impl == "lean" else "1.00"
        tr = f"{ratio['time_lean_over_reference']:.2f}" if impl == "lean" else "1.00"
        cr = f"{ratio['cpu_time_lean_over_reference']:.2f}" if impl == "lean" else "1.00"
        lines.append(f"| {mode} | {impl} | {r['peak_mib']:.0f} | {r['time_s']:.2f} | {r['cpu_time_s']:.2f} "
                     f"| {pr} | {tr} | {cr} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

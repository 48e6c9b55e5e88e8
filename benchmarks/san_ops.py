"""SAN operators: memory-lean `torch` (and, on CUDA, `triton`) backends against `reference`.

    python benchmarks/san_ops.py [--device cpu|cuda] [--batch 8] [--repeats 3]
        [--cupy-reference /path/to/SAN] [--skip-train-step] [--skip-flops]
        [--out benchmarks/results/san_ops.json]  (also writes the .md beside it)

Shapes: what SAN10 meets at 224 px, per stage (resolution 112, 56, 28, 14, 7; kernel 3, 7, 7, 7, 7):
`aggregation` of the bottleneck's mid planes (16, 64, 128, 256, 512 channels, share 8) and
`subtraction2` of its relation planes (4, 16, 32, 64, 128 channels), reflection padding. Each
measurement is one forward + backward (gradient of a fixed random upstream gradient).

* time: best of `--repeats` runs after one warm-up, in this process (normal allocator).
* peak memory: on CPU, measured in a child process with glibc's mmap threshold fixed
  (MALLOC_MMAP_THRESHOLD_, so freed tensors leave the resident set at once): the kernel's
  resident-set high-water mark is reset (/proc/self/clear_refs) once the inputs (and the upstream
  gradient) exist, and the peak is the rise of VmHWM over VmRSS at that point; on CUDA,
  torch.cuda.max_memory_allocated over the same baseline. The output and the gradients returned
  are part of the peak (subtraction2's output is k*k times its input for every backend, which
  bounds how much any backend can save there).
* `--cupy-reference DIR` (CUDA only): also times the official CuPy kernels of hszhao/SAN from a
  checkout DIR (not part of attnzoo), imported from there for the measurement only.

Also: one `san10_pairwise` training step (SGD, batch 4 on CPU, 224 px) and the multiply-adds of the
six SAN networks at 224 px counted by attnzoo's FlopCounterMode formulas.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from attnzoo import ops

STAGES = [  # resolution, kernel, aggregation channels, relation channels
    (112, 3, 16, 4), (56, 7, 64, 16), (28, 7, 128, 32), (14, 7, 256, 64), (7, 7, 512, 128)]
SHARE = 8


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def make_inputs(op: str, stage: int, batch: int, device, dtype=torch.float32):
    res, k, c_agg, c_rel = STAGES[stage]
    g = torch.Generator().manual_seed(stage)
    pad = (k - 1) // 2
    if op == "aggregation":
        x = torch.randn(batch, c_agg, res, res, generator=g).to(device, dtype)
        w = torch.randn(batch, c_agg // SHARE, k * k, res * res, generator=g).softmax(2).to(device, dtype)
        grad = torch.randn(batch, c_agg, res, res, generator=g).to(device, dtype)
        return (x, w), grad, k, pad
    x1 = torch.randn(batch, c_rel, res, res, generator=g).to(device, dtype)
    x2 = torch.randn(batch, c_rel, res, res, generator=g).to(device, dtype)
    grad = torch.randn(batch, c_rel, k * k, res * res, generator=g).to(device, dtype)
    return (x1, x2), grad, k, pad


def run_once(op: str, backend: str, inputs, grad, k: int, pad: int, cupy_fn=None):
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    if cupy_fn is not None:
        y = cupy_fn(op, inputs, k, pad)
    else:
        y = getattr(ops, op)(*inputs, kernel_size=k, stride=1, padding=pad, dilation=1, pad_mode="reflect",
                             backend=backend)
    y.backward(grad)
    return y, [t.grad for t in inputs]


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(op, backend, stage, batch, device, cupy_fn=None) -> int:
    inputs, grad, k, pad = make_inputs(op, stage, batch, device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = run_once(op, backend, inputs, grad, k, pad, cupy_fn)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        _reset_peak_rss()
        base = _status_bytes("VmRSS")
        out = run_once(op, backend, inputs, grad, k, pad, cupy_fn)
        peak = max(0, _status_bytes("VmHWM") - base)
    del out
    return peak


def seconds(op, backend, stage, batch, device, repeats, cupy_fn=None) -> float:
    inputs, grad, k, pad = make_inputs(op, stage, batch, device)
    run_once(op, backend, inputs, grad, k, pad, cupy_fn)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        run_once(op, backend, inputs, grad, k, pad, cupy_fn)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def cpu_peaks_in_child(cases, batch) -> dict:
    """CPU peaks, measured in a child process whose glibc serves every block over 64 KiB by mmap
    (freed tensors leave the resident set at once); timings stay in this process, with the normal
    allocator."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--memory-child", json.dumps({"cases": cases, "batch": batch})]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cupy_compat() -> None:
    """Let the official kernels, written for CuPy < 8, load on current CuPy: `cupy.util.memoize` is
    `cupy.memoize` there, and `cupy.cuda.compile_with_cache` (gone in recent releases) becomes a
    `cupy.RawModule` whose kernels accept the official `stream=` argument (anything with `.ptr`)."""
    import contextlib
    import types

    import cupy

    if not hasattr(cupy, "util"):
        cupy.util = types.SimpleNamespace(memoize=cupy.memoize)
    if hasattr(cupy.cuda, "compile_with_cache"):
        return

    class Module:
        def __init__(self, code, **_):
            self.raw = cupy.RawModule(code=code)

        def get_function(self, name):
            kernel = self.raw.get_function(name)

            def launch(grid, block, args, shared_mem=0, stream=None):
                on = cupy.cuda.ExternalStream(stream.ptr) if stream is not None else contextlib.nullcontext()
                with on:
                    kernel(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)
            return launch

    cupy.cuda.compile_with_cache = Module


def load_cupy_ops(ref: Path):
    _cupy_compat()
    sys.path.insert(0, str(ref))
    import importlib

    functional = importlib.import_module("lib.sa.functional")

    def call(op, inputs, k, pad):
        if op == "aggregation":
            return functional.aggregation(*inputs, k, 1, pad, 1, 1)
        return functional.subtraction2(*inputs, k, 1, pad, 1, 1)

    return call


def train_step(batch: int, device, backend: str) -> dict:
    from attnzoo.models.san import san10_pairwise

    torch.manual_seed(0)
    model = san10_pairwise(backend=backend).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    times, losses = [], []
    for _ in range(2):
        _sync(device)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return {"batch": batch, "img_size": 224, "backend": backend, "step_seconds": times, "losses": losses,
            "finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses))}


def count_macs() -> dict:
    from attnzoo.engine.flops import count_flops
    from attnzoo.models import san

    seed = {"san10_pairwise": 2.2, "san10_patchwise": 1.9, "san15_pairwise": 3.0,
            "san15_patchwise": 2.6, "san19_pairwise": 3.8, "san19_patchwise": 3.3}
    out = {}
    for name, gmac in seed.items():
        model = getattr(san, name)(backend="torch")
        r = count_flops(model, (1, 3, 224, 224))
        out[name] = {"gmacs": round(r["macs"] / 1e9, 3), "seed_gmacs": gmac,
                     "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                     "uncounted_ops": r.get("uncounted_ops", [])}
    return out


def to_markdown(report: dict) -> str:
    dev = report["device"]
    lines = [f"# SAN operators, forward + backward, SAN10 shapes at 224 px (batch {report['batch']}, {dev})", "",
             report["note"], "",
             "| op | stage | C | res | k | backend | time (s) | peak (MB) | time / reference | peak / reference |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for row in report["ops"]:
        lines.append(f"| {row['op']} | {row['stage']} | {row['channels']} | {row['res']} | {row['kernel']} | "
                     f"{row['backend']} | {row['seconds']:.4f} | {row['peak_bytes'] / 2**20:.1f} | "
                     f"{row.get('time_ratio', 1.0):.2f} | {row.get('peak_ratio', 1.0):.3f} |")
    if report["device"] == "cpu":
        lines += ["", "subtraction2 returns (N, C, k*k, Ho*Wo), k*k times its input, for every backend, and "
                  "receives a gradient of that size: both are in the peak, so about 1/2 of `reference` is "
                  "the floor there; the torch backend allocates nothing else of that size. The `triton` "
                  "backend and the official CuPy kernels need a GPU: `--device cuda [--cupy-reference DIR]`."]
    if report.get("train_step"):
        t = report["train_step"]
        lines += ["", f"san10_pairwise training step ({dev}, batch {t['batch']}, 224 px, backend {t['backend']}): "
                  f"{', '.join(f'{s:.1f} s' for s in t['step_seconds'])} (first includes warm-up); "
                  f"losses {', '.join(f'{v:.3f}' for v in t['losses'])}."]
    if report.get("macs"):
        lines += ["", "| network | params (M) | GMac (attnzoo count) | GMac (seed) |", "|---|---:|---:|---:|"]
        for name, m in report["macs"].items():
            lines.append(f"| {name} | {m['params_m']} | {m['gmacs']} | {m['seed_gmacs']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", default="0,1,2,3,4")
    parser.add_argument("--cupy-reference", type=Path, default=None)
    parser.add_argument("--skip-train-step", action="store_true")
    parser.add_argument("--skip-flops", action="store_true")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/san_ops.json"))
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        job = json.loads(args.memory_child)
        for op in ("aggregation", "subtraction2"):  # first-call initialisation stays out of the peaks
            for backend in ("reference", "torch"):
                run_once(op, backend, *make_inputs(op, 4, 1, "cpu"))
        peaks = {"|".join(map(str, c)): peak_bytes(c[0], c[1], c[2], job["batch"], "cpu") for c in job["cases"]}
        print(json.dumps(peaks))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.cupy_reference and args.device != "cuda":
        parser.error("--cupy-reference needs --device cuda (the official kernels are CUDA only)")
    backends = ["reference", "torch"] + (["triton"] if args.device == "cuda" else [])
    cupy_fn = load_cupy_ops(args.cupy_reference) if args.cupy_reference else None
    cases = [[op, backend, stage] for op in ("aggregation", "subtraction2")
             for stage in map(int, args.stages.split(",")) for backend in backends + (["cupy"] if cupy_fn else [])]
    if args.device == "cpu":
        peaks = cpu_peaks_in_child(cases, args.batch)
    else:
        peaks = {"|".join(map(str, c)): peak_bytes(*c, args.batch, "cuda", cupy_fn if c[1] == "cupy" else None)
                 for c in cases}
    rows, base = [], None
    for op, backend, stage in cases:
        res, k, c_agg, c_rel = STAGES[stage]
        row = {"op": op, "stage": stage, "res": res, "kernel": k, "backend": backend,
               "channels": c_agg if op == "aggregation" else c_rel,
               "peak_bytes": peaks[f"{op}|{backend}|{stage}"],
               "seconds": seconds(op, backend, stage, args.batch, args.device, args.repeats,
                                  cupy_fn if backend == "cupy" else None)}
        if backend == "reference":
            base = row
        else:
            row["time_ratio"] = row["seconds"] / base["seconds"]
            row["peak_ratio"] = row["peak_bytes"] / max(base["peak_bytes"], 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
              "batch": args.batch, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "note": ("time: best of %d after a warm-up; peak: rise of the resident-set high-water mark (CPU) or "
                       "max_memory_allocated (CUDA) over the inputs; ratios against `reference` in the "
                       "same run." % args.repeats),
              "ops": rows}
    if not args.skip_train_step:
        report["train_step"] = train_step(args.train_batch, args.device, "auto")
        print(json.dumps(report["train_step"]), flush=True)
    if not args.skip_flops:
        report["macs"] = count_macs()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

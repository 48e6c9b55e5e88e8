"""GPU acceptance check: every CUDA path of attnzoo in one command, about 8 minutes on one H200.

    PYTHONPATH=src python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--skip 3,5]
        [--only 1] [--cupy-reference DIR] [--out-dir benchmarks/results] [--budget-scale 1.0]

Each part runs in its own Python process under a time budget (`BUDGETS`), so a crash, a hang or
a sticky CUDA error costs that part only; its checks also stop starting once the budget is spent.
One line per check: `ok`, `FAILED (why)` or `skipped (why)`. After every part, gpu_check.json
and gpu_check.md are rewritten in --out-dir (device, torch/triton/timm/cupy versions, checks).
Exit status 1 when a check failed.

1. SAN operators (`attnzoo.ops`): `triton` against `reference` run in float64 on the same
   (rounded) inputs, in float32, bf16 and fp16, forward and backward (`TOLERANCES`), at SAN10's
   shapes of 224 px (batch 8); then time (median, after a warm-up) and peak memory of `triton`,
   `torch` and `reference` in float32, and of the official CuPy kernels of hszhao/SAN
   (`--cupy-reference DIR`: a checkout holding lib/sa, imported from there). Targets: triton
   >= 3x reference, >= 1.0x the official kernels.
2. One training step (forward, backward, SGD) of each family in float32, bf16 autocast +
   channels_last and fp16 autocast + channels_last + GradScaler, from the same weights and batch:
   loss and gradients finite, loss within `LOSS_TOLERANCE` of float32; images/s and peak memory.
3. Throughput, bf16 autocast + channels_last, one batch size: senet_resnet50 and
   lsas_senet_resnet50 against timm's seresnet50 and resnet50, train and eval img/s, eager and
   torch.compile; and the graph breaks torch._dynamo.explain finds in each family's network.
4. `attnzoo train` through the CLI on `synthetic`, 2 epochs, bf16 + channels_last + EMA, then
   `attnzoo eval` of its best checkpoint on the same device; then one epoch with train.compile.
5. `torchrun --nproc_per_node 1` (nccl; gloo on CPU) with train.sync_bn=true for one epoch, the
   process group and SyncBatchNorm layers the run really used recorded from inside the process.
6. End to end: `attnzoo train` against timm's `train.py` (the one of the installed timm version,
   exported beforehand by benchmarks/timm_train_script.py to benchmarks/out/timm/<version>/train.py;
   without it that side is skipped) in train img/s of the last epoch, same network, batch, lr
   schedule, workers, pinned memory, bf16 + channels_last, timm's prefetcher on: ResNet-20 on a
   generated CIFAR-10-format set at 32 px (in memory for attnzoo, torchvision's CIFAR10 for timm)
   and ResNet-50 on a generated JPEG folder at 224 px. Both command lines are printed; the host
   syncs per step inside each side's train_one_epoch are counted with torch.cuda.set_sync_debug_mode.
   Target: >= 1.0x timm on both rows.

`--device cpu --quick` runs the same code at tiny sizes (the Triton kernels in Triton's
interpreter, gloo instead of nccl, torch.compile with the `eager` backend, smaller stand-ins where
Dynamo's tracing would dominate); the test suite runs it. What cannot run on a CPU (SyncBatchNorm,
inductor, the official kernels, the speed targets) is reported as `skipped (cpu)`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {1: "SAN operators", 2: "training steps", 3: "throughput and torch.compile",
         4: "CLI train + eval", 5: "torchrun + SyncBatchNorm", 6: "end to end vs timm train.py"}
BUDGETS = {1: 80, 2: 75, 3: 125, 4: 70, 5: 35, 6: 105}  # seconds per part on the GPU (490 s in all)
QUICK_BUDGETS = {1: 90, 2: 120, 3: 90, 4: 120, 5: 120, 6: 150}  # safety caps for the CPU run
GRACE_S = 10  # a part's process is killed this long after its budget (a check in flight then)
TOLERANCES = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 2e-3}  # ||out - ref|| / ||ref||
LOSS_TOLERANCE = {"bf16": 0.05, "fp16": 0.02}  # |loss - loss_fp32| / max(1, |loss_fp32|)
TARGETS = {"reference": 3.0, "cupy": 1.0}  # triton speed-up (fwd+bwd, all stages) at least


# ---------------------------------------------------------------------------- one check

class Skip(Exception):
    """The check does not apply here (the reason is printed)."""


class Failed(Exception):
    """The check ran and missed what it asserts; `data` keeps the measurements."""

    def __init__(self, reason: str, data: dict | None = None):
        super().__init__(reason)
        self.data = data or {}


class Checks:
    """Runs the checks of one part: each prints one line and appends one JSON line to `path`."""

    def __init__(self, part: int, path: Path, deadline: float):
        self.part, self.path, self.deadline, self.count = part, path, deadline, 0

    def run(self, name: str, fn, *args) -> dict | None:
        """fn(*args) -> data dict with a 'summary' line; raises Skip or Failed, or fails by error."""
        self.count += 1
        t0 = time.time()
        data, reason = {}, ""
        if t0 > self.deadline:
            status, reason = "skipped", "time budget of the part spent"
        else:
            try:
                data = fn(*args) or {}
                status = "ok"
            except Skip as e:
                status, reason = "skipped", str(e)
            except Failed as e:
                status, reason, data = "FAILED", str(e), e.data
            except Exception as e:  # noqa: BLE001  (any error is this check's failure, not the part's)
                status, reason = "FAILED", f"{type(e).__name__}: {_first_line(e)}"
                data = {"traceback": traceback.format_exc(limit=-6)}
        record = {"part": self.part, "id": f"{self.part}.{self.count}", "check": name, "status": status,
                  "reason": reason, "summary": data.pop("summary", ""), "data": data,
                  "seconds": round(time.time() - t0, 2)}
        print(_line(record), flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
        return data if status == "ok" else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:400] if text else type(e).__name__


def _line(r: dict) -> str:
    status = r["status"] if r["status"] == "ok" else f"{r['status']} ({r['reason']})"
    return f"[{r['id']}] {status:<8} {r['check']}" + (f": {r['summary']}" if r["summary"] else "")


# ---------------------------------------------------------------------------- measuring

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, repeats: int, warmup: int = 1):
    """(median seconds of `fn` after `warmup` calls, peak CUDA memory in bytes or None on CPU)."""
    import statistics

    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return statistics.median(times), peak


def _mib(peak) -> str:
    return "peak n/a (cpu)" if peak is None else f"peak {peak / 2**20:.0f} MiB"


def _rel_error(out, ref) -> float:
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------- part 1: SAN operators

QUICK_STAGES = [(5, 3, 16, 8)]  # res, kernel, aggregation / relation channels (Triton's interpreter is slow)


def san_inputs(op: str, stage, batch: int, device, dtype, seed: int):
    """Random inputs of one SAN10 stage: ([x, weight or x2], upstream gradient, kernel, padding)."""
    import torch
    from san_ops import SHARE

    res, k, c_agg, c_rel = stage
    g = torch.Generator().manual_seed(seed)
    c = c_agg if op == "aggregation" else c_rel
    shapes = ([(batch, c, res, res), (batch, c // SHARE, k * k, res * res), (batch, c, res, res)]
              if op == "aggregation" else
              [(batch, c, res, res), (batch, c, res, res), (batch, c, k * k, res * res)])
    x, second, grad = (torch.randn(s, generator=g) for s in shapes)
    if op == "aggregation":
        second = second.softmax(2)  # attention weights, as the networks produce them
    x, second, grad = (t.to(device, dtype) for t in (x, second, grad))
    return [x, second], grad, k, (k - 1) // 2


def _ops_agree(op, dtype_name, stages, batch, device, cupy_fn=None):
    import torch
    from san_ops import run_once

    worst = 0.0
    for i, stage in enumerate(stages):
        inputs, grad, k, pad = san_inputs(op, stage, batch, device, getattr(torch, dtype_name), seed=i)
        y, grads = run_once(op, "triton", inputs, grad, k, pad, cupy_fn)
        y_ref, grads_ref = run_once(op, "reference", [t.double() for t in inputs], grad.double(), k, pad)
        worst = max([worst] + [_rel_error(a, r) for a, r in zip([y, *grads], [y_ref, *grads_ref], strict=True)])
    tol = TOLERANCES[dtype_name]
    data = {"max_rel_error": worst, "tolerance": tol, "stages": len(stages),
            "summary": f"max ||out - ref|| / ||ref|| {worst:.2e} over {len(stages)} stages, forward and "
                       f"backward (tolerance {tol:g}; ref: `reference` in float64)"}
    if not worst <= tol:  # NaN fails too
        raise Failed(f"relative error {worst:.2e} > {tol:g}", data)
    return data


def _ops_time(op, backend, stages, batch, device, repeats, cupy_fn=None):
    import torch
    from san_ops import run_once

    if backend == "triton" and device.type != "cuda":
        raise Skip("cpu: timings of Triton's interpreter mean nothing")
    rows, total = [], 0.0
    for i, stage in enumerate(stages):
        inputs, grad, k, pad = san_inputs(op, stage, batch, device, torch.float32, seed=i)
        seconds, peak = measure(lambda inputs=inputs, grad=grad, k=k, pad=pad: run_once(op, backend, inputs, grad, k, pad, cupy_fn),
                                device, repeats)
        rows.append({"stage": i, "res": stage[0], "kernel": stage[1], "seconds": seconds, "peak_bytes": peak})
        total += seconds
    peak = max((r["peak_bytes"] or 0) for r in rows) if device.type == "cuda" else None
    return {"seconds": total, "stages": rows,
            "summary": f"{total * 1e3:.2f} ms fwd+bwd over {len(stages)} stages (float32, batch {batch}), "
                       f"{_mib(peak)}"}


def _speedup(op, against, times, device):
    if device.type != "cuda":
        raise Skip("cpu: timings of the Triton interpreter say nothing")
    if (op, against) not in times or (op, "triton") not in times:
        raise Skip(f"no timing of {against if (op, against) not in times else 'triton'}")
    ratio = times[(op, against)] / times[(op, "triton")]
    data = {"speedup": ratio, "target": TARGETS[against],
            "summary": f"triton {ratio:.2f}x {against} (target >= {TARGETS[against]:g}x)"}
    if ratio < TARGETS[against]:
        raise Failed(f"{ratio:.2f}x < {TARGETS[against]:g}x", data)
    return data


def part_ops(a, checks: Checks, device) -> None:
    from san_ops import STAGES, load_cupy_ops

    stages, batch, repeats = (QUICK_STAGES, 1, 1) if a.quick else (STAGES, 8, 10)
    loaded = []
    if a.cupy_reference and device.type == "cuda":
        checks.run("official CuPy kernels import", lambda: loaded.append(load_cupy_ops(Path(a.cupy_reference)))
                   or {"summary": f"lib.sa from {a.cupy_reference}"})
    cupy_fn = loaded[0] if loaded else None
    for op in ("aggregation", "subtraction2"):
        for dtype_name in TOLERANCES:
            checks.run(f"{op} triton {dtype_name} vs reference", _ops_agree, op, dtype_name, stages, batch, device)
        if cupy_fn is not None:
            checks.run(f"{op} official CuPy float32 vs reference", _ops_agree, op, "float32", stages, batch,
                       device, cupy_fn)
    times = {}
    for op in ("aggregation", "subtraction2"):
        for backend in ("triton", "torch", "reference") + (("cupy",) if cupy_fn else ()):
            data = checks.run(f"{op} {backend} time and memory", _ops_time, op, backend, stages, batch,
                              device, repeats, cupy_fn if backend == "cupy" else None)
            if data:
                times[(op, backend)] = data["seconds"]
        for against in TARGETS:
            if against == "cupy" and not cupy_fn:
                checks.run(f"{op} triton vs official CuPy kernels", _raise, Skip(
                    "cpu: the official kernels are CUDA only" if device.type != "cuda" else
                    "no --cupy-reference DIR given"))
                continue
            checks.run(f"{op} triton speed-up over {against}", _speedup, op, against, times, device)


def _raise(e: Exception):
    raise e


# ---------------------------------------------------------------------------- part 2: training steps

FAMILIES = [  # name, image size, batch, constructor options
    ("lsas_senet_resnet50", 224, 32, {}),
    ("san10_pairwise", 224, 32, {}),
    ("lesa_resnet50", 224, 32, {"img_size": 224}),
    ("ida_resnet101", 448, 16, {}),
    ("sb_vgg16_cifar", 32, 128, {}),
]
QUICK_FAMILIES = [  # CPU stand-ins, batch 2: the same blocks in smaller networks or at smaller inputs
    ("lsas_senet_resnet18", 32, 2, {}),
    ("san10_pairwise", 128, 2, {}),  # the smallest size SAN10's last stage (7x7 kernel) accepts
    # LESA blocks in stages 3 and 4 of a one-bottleneck-per-stage ResNet-50: the full network at 32 px
    # and batch 2 (16 bottlenecks in train-mode BatchNorm over 2x2 maps) moves its float32 logits by 23%
    # for a 1e-4 input change, so any bf16 rounding shows as a random loss change of up to 8%
    ("lesa_resnet50", 32, 2, {"img_size": 32, "layers": (1, 1, 1, 1), "first_conv_stages": (1, 2)}),
    ("ida", 64, 2, {"backbone": "resnet18", "num_classes": 20}),
    ("sb_vgg16_cifar", 32, 2, {}),
]
PRECISIONS = [("float32", None, False), ("bf16", "bfloat16", True), ("fp16", "float16", True)]


def _logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _batch(model, name, size, batch, device, channels_last):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    classes = model.num_classes
    y = (torch.rand(batch, classes, generator=g) < 0.1).float() if name.startswith("ida") else \
        torch.randint(0, classes, (batch,), generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device)


def _loss(name):
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits if name.startswith("ida") else F.cross_entropy


def _family_step(name, size, batch, kwargs, precision, state, fp32_loss, device, repeats):
    """One step from `state` in `precision`: loss, finiteness, loss against float32, img/s, memory."""
    import torch

    from attnzoo import create_model

    label, amp, channels_last = precision
    dtype = getattr(torch, amp) if amp else None
    model = create_model(name, **kwargs).to(device).train()
    model.load_state_dict(state)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=label == "fp16")
    x, y = _batch(model, name, size, batch, device, channels_last)
    loss_fn = _loss(name)

    def step(check: bool = False):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(_logits(model(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        finite = None
        if check:
            scaler.unscale_(opt)
            finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
        scaler.step(opt)
        scaler.update()
        return loss.item() if check else None, finite

    skipped = 0
    t0 = time.perf_counter()
    loss, finite = step(check=True)
    while not finite and scaler.is_enabled() and skipped < 3:  # the scaler skips the step, halves its scale
        skipped += 1
        loss, finite = step(check=True)
    seconds, peak = measure(step, device, repeats) if repeats else (time.perf_counter() - t0, None)
    data = {"loss": loss, "grads_finite": finite, "img_per_s": batch / seconds, "peak_bytes": peak,
            "scaler_skipped_steps": skipped, "batch": batch, "img_size": size}
    parts = [f"loss {loss:.4f}"]
    if fp32_loss is not None:
        delta, tol = abs(loss - fp32_loss), LOSS_TOLERANCE[label] * max(1.0, abs(fp32_loss))
        data.update(fp32_loss=fp32_loss, loss_delta=delta, loss_tolerance=tol)
        parts.append(f"float32 {fp32_loss:.4f}, |d| {delta:.4f} <= {tol:.3f}" if delta <= tol else
                     f"float32 {fp32_loss:.4f}, |d| {delta:.4f}")
    parts += [f"grads {'finite' if finite else 'NOT finite'}" + (f" after {skipped} scaler skips" if skipped else ""),
              f"{batch / seconds:.1f} img/s", _mib(peak)]
    data["summary"] = ", ".join(parts)
    if not math.isfinite(loss):
        raise Failed(f"loss {loss}", data)
    if not finite:
        raise Failed("gradients not finite", data)
    if fp32_loss is not None and not data["loss_delta"] <= data["loss_tolerance"]:
        raise Failed(f"loss {loss:.4f} vs float32 {fp32_loss:.4f}: |d| {data['loss_delta']:.4f} > "
                     f"{data['loss_tolerance']:.3f}", data)
    return data


def part_steps(a, checks: Checks, device) -> None:
    import torch

    from attnzoo import create_model

    torch.backends.cudnn.benchmark = True
    for name, size, batch, kwargs in QUICK_FAMILIES if a.quick else FAMILIES:
        torch.manual_seed(0)
        state = create_model(name, **kwargs).state_dict()
        fp32_loss = None
        for precision in PRECISIONS:
            cl = " channels_last" if precision[2] else ""
            scaler = " + GradScaler" if precision[0] == "fp16" else ""
            check = f"{name} {size}px batch {batch} {precision[0]}{cl}{scaler} step"
            if precision[0] == "fp16" and device.type == "cpu":
                checks.run(check, _raise, Skip("cpu: float16 convolutions take seconds to minutes per step "
                                               "on a CPU; the GradScaler path is for CUDA"))
                continue
            data = checks.run(check, _family_step, name, size, batch, kwargs, precision, state, fp32_loss,
                              device, 0 if a.quick else 3)
            if precision[0] == "float32":
                fp32_loss = data["loss"] if data else None
                if data is None:
                    break  # nothing to compare the mixed-precision losses against


# ---------------------------------------------------------------------------- part 3: throughput

# in the order compiled timings are taken while the part's budget lasts (compiling takes a while)
THROUGHPUT_MODELS = ["lsas_senet_resnet50", "seresnet50", "senet_resnet50", "resnet50"]
QUICK_THROUGHPUT_MODELS = ["lsas_senet_resnet18", "seresnet18", "senet_resnet18", "resnet18"]
EXPLAIN = [  # one network per family, at a small input: name, size, options
    ("sb_vgg16_cifar", 32, {}), ("senet_resnet50", 64, {}), ("lsas_senet_resnet50", 64, {}),
    ("san10_pairwise", 128, {}), ("lesa_resnet50", 64, {"img_size": 64}), ("ida_resnet101", 64, {})]


def _throughput(name, batch, size, device, compiled: bool, backend: str, repeats: int):
    import torch
    import torch.nn.functional as F

    from attnzoo import create_model

    torch.manual_seed(0)
    model = create_model(name).to(device).to(memory_format=torch.channels_last)
    if compiled:
        model.compile(backend=backend)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def train_step():
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def eval_step():
        with torch.inference_mode(), autocast:
            model(x)

    warmup = 1 if repeats == 1 else 3
    t0 = time.time()
    model.train()
    train_s, train_peak = measure(train_step, device, repeats, warmup)
    model.eval()
    eval_s, _ = measure(eval_step, device, repeats, warmup)
    how = f"torch.compile (backend {backend})" if compiled else "eager"
    return {"train_img_per_s": batch / train_s, "eval_img_per_s": batch / eval_s, "train_peak_bytes": train_peak,
            "batch": batch, "img_size": size, "compiled": compiled, "backend": backend if compiled else None,
            "wall_s": time.time() - t0,
            "summary": f"{how}: train {batch / train_s:.1f} img/s, eval {batch / eval_s:.1f} img/s, "
                       f"train {_mib(train_peak)}"}


def _graph_breaks(name, size, kwargs, device):
    """Graph breaks torch._dynamo.explain finds in one training-mode forward (eager backend)."""
    import torch
    import torch._dynamo as dynamo

    from attnzoo import create_model

    model = create_model(name, **kwargs).to(device).train()
    x = torch.randn(2, 3, size, size, device=device)
    dynamo.reset()  # nothing cached from an earlier network
    report = dynamo.explain(model)(x)
    breaks = []
    for reason in report.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        where = f"{frame.filename.split('/src/')[-1]}:{frame.lineno}" if frame else "?"
        breaks.append(f"{reason.reason.strip().splitlines()[0][:160]} @ {where}")
    dynamo.reset()
    unique = sorted({b: breaks.count(b) for b in breaks}.items())
    count = report.graph_break_count
    data = {"graph_breaks": count, "graphs": report.graph_count, "reasons": [f"{n}x {b}" for b, n in unique],
            "summary": f"{count} graph breaks, {report.graph_count} graphs"}
    if count:
        raise Failed(f"{count} graph breaks: " + "; ".join(data["reasons"]), data)
    return data


def part_throughput(a, checks: Checks, device) -> None:
    import torch

    torch.backends.cudnn.benchmark = True
    cpu = device.type != "cuda"
    models = QUICK_THROUGHPUT_MODELS if a.quick else THROUGHPUT_MODELS
    batch, size, repeats = (2, 64, 1) if a.quick else (64, 224, 10)
    backend = "eager" if cpu else "inductor"  # inductor's C++ build takes minutes on a CPU
    explain = EXPLAIN[:1] if a.quick else EXPLAIN  # Dynamo's tracing of the large ones takes long
    for name, esize, kwargs in explain:
        checks.run(f"graph breaks {name} {esize}px", _graph_breaks, name, esize, kwargs, device)
    for name in models:
        checks.run(f"{name} bf16 channels_last batch {batch} eager", _throughput, name, batch, size, device,
                   False, backend, repeats)
    for i, name in enumerate(models):
        if a.quick and i:
            checks.run(f"{name} compiled", _raise, Skip("quick: compiled timing of the first model only"))
            continue
        checks.run(f"{name} bf16 channels_last batch {batch} compiled", _throughput, name, batch, size,
                   device, True, backend, repeats)


# ---------------------------------------------------------------------------- part 4: CLI

def _cli(args: list[str], deadline: float, launcher=None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable, "-m", "attnzoo.cli"]) + args
    left = deadline - time.time()
    if left < 5:
        raise Skip("time budget of the part spent")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Failed(f"exit status {proc.returncode}: {tail[0][:300]}")
    return proc


def _train_args(a, device, out: Path, name: str, epochs: int, extra: list[str]) -> list[str]:
    depth, n_train, n_test, batch = (11, 64, 32, 16) if a.quick else (29, 4096, 1024, 256)
    return ["train", "--model", "lsas_senet_cifar", "--data", "synthetic", "--epochs", str(epochs),
            "--batch-size", str(batch), "--device", device.type, "--out-dir", str(out), "--name", name,
            "--quiet", "--set", f"model.kwargs.depth={depth}", "--set", f"data.options.num_train={n_train}",
            "--set", f"data.options.num_test={n_test}", "--set", "data.workers=0", *extra]


def _summary(out: Path, name: str, epochs: int) -> dict:
    summary = json.loads((out / name / "summary.json").read_text())
    test = summary["final"].get("test", {})
    if summary["epochs_run"] != epochs or not math.isfinite(test.get("loss", float("nan"))):
        raise Failed(f"epochs run {summary['epochs_run']} of {epochs}, final test metrics {test}")
    return summary


def _cli_train(a, device, out, deadline, name, epochs, extra):
    t0 = time.time()
    _cli(_train_args(a, device, out, name, epochs, extra), deadline)
    s = _summary(out, name, epochs)
    return {"wall_s": time.time() - t0, "train_img_per_s": s["train_img_per_s"], "best": s["best"],
            "summary": f"{epochs} epochs, test top-1 {s['final']['test']['top1']:.1f}%, best from "
                       f"{s['best'].get('source')}, {s['train_img_per_s']:.0f} train img/s, "
                       f"{time.time() - t0:.0f} s with start-up"}


def _cli_eval(device, out, deadline, best):
    ckpt = out / "cli" / "checkpoints" / "best.safetensors"
    proc = _cli(["eval", "--checkpoint", str(ckpt), "--device", device.type], deadline)
    metrics = json.loads(proc.stdout)["metrics"]
    top1, trained = metrics["test"]["top1"], best["test"]["top1"]
    data = {"metrics": metrics, "train_best_top1": trained,
            "summary": f"test top-1 {top1:.2f}% (float32) vs {trained:.2f}% measured in training "
                       "(mixed precision), tolerance 2 points"}
    if abs(top1 - trained) > 2.0:
        raise Failed(f"eval top-1 {top1:.2f}% vs {trained:.2f}% in training", data)
    return data


def part_cli(a, checks: Checks, device) -> None:
    with tempfile.TemporaryDirectory(prefix="gpu-check-cli-") as tmp:
        _cli_checks(a, checks, device, Path(tmp))


def _cli_checks(a, checks: Checks, device, out: Path) -> None:
    run = checks.run("attnzoo train synthetic 2 epochs bf16 + channels_last + EMA", _cli_train, a, device, out,
                     checks.deadline, "cli", 2, ["--set", "train.amp=bf16", "--set", "train.channels_last=true",
                                                 "--set", "train.ema_decay=0.9"])
    if run is None:
        checks.run("attnzoo eval of its checkpoint", _raise, Skip("no checkpoint: the training run failed"))
    else:
        checks.run("attnzoo eval of its checkpoint", _cli_eval, device, out, checks.deadline, run["best"])
    if device.type != "cuda":
        checks.run("attnzoo train with train.compile=true", _raise, Skip(
            "cpu: inductor's C++ build takes minutes (tests/engine/test_train_compile.py covers the option)"))
    else:
        checks.run("attnzoo train with train.compile=true, 1 epoch", _cli_train, a, device, out,
                   checks.deadline, "compiled", 1, ["--set", "train.amp=bf16", "--set", "train.compile=true"])


# ---------------------------------------------------------------------------- part 5: torchrun

def torchrun_worker(report: str, argv: list[str]) -> int:
    """Inside torchrun: `attnzoo.cli.main(argv)`, recording the process group and SyncBatchNorm."""
    import torch.distributed as dist
    from torch import nn

    seen = {"backend": None, "sync_bn_layers": 0, "world_size": None}
    init, convert = dist.init_process_group, nn.SyncBatchNorm.convert_sync_batchnorm

    def spy_init(*args, **kwargs):
        seen["backend"] = kwargs.get("backend", args[0] if args else None)
        result = init(*args, **kwargs)
        seen["world_size"] = dist.get_world_size()
        return result

    def spy_convert(module, *args, **kwargs):
        module = convert(module, *args, **kwargs)
        seen["sync_bn_layers"] = sum(isinstance(m, nn.SyncBatchNorm) for m in module.modules())
        return module

    dist.init_process_group, nn.SyncBatchNorm.convert_sync_batchnorm = spy_init, spy_convert
    from attnzoo.cli import main

    status = main(argv)
    if os.environ.get("RANK", "0") == "0":
        Path(report).write_text(json.dumps(seen))
    return status


def _torchrun(a, device, out, deadline):
    report = out / "torchrun.json"
    extra = ["--set", "train.sync_bn=true"] if device.type == "cuda" else []
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                str(Path(__file__).resolve()), "--torchrun-worker", str(report), "--"]
    t0 = time.time()
    _cli(_train_args(a, device, out, "torchrun", 1, extra), deadline, launcher=launcher)
    s = _summary(out, "torchrun", 1)
    seen = json.loads(report.read_text())
    return {**seen, "world_size_in_summary": s["world_size"], "wall_s": time.time() - t0,
            "summary": f"1 epoch, test top-1 {s['final']['test']['top1']:.1f}%, {time.time() - t0:.0f} s"}


def _process_group(run, expected):
    data = {"backend": run["backend"], "world_size": run["world_size"],
            "summary": f"backend {run['backend']}, world size {run['world_size']}"}
    if run["backend"] != expected:
        raise Failed(f"no {expected} process group: attnzoo ran the torchrun process as a single process "
                     f"(backend {run['backend']}, summary world_size {run['world_size_in_summary']})", data)
    return data


def _sync_bn(run, device):
    if device.type != "cuda":
        raise Skip("cpu: SyncBatchNorm needs CUDA tensors")
    data = {"sync_bn_layers": run["sync_bn_layers"], "summary": f"{run['sync_bn_layers']} SyncBatchNorm layers"}
    if not run["sync_bn_layers"]:
        raise Failed("train.sync_bn=true converted no BatchNorm layer", data)
    return data


def part_torchrun(a, checks: Checks, device) -> None:
    with tempfile.TemporaryDirectory(prefix="gpu-check-torchrun-") as tmp:
        _torchrun_checks(a, checks, device, Path(tmp))


def _torchrun_checks(a, checks: Checks, device, out: Path) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    run = checks.run(f"torchrun --nproc_per_node 1 attnzoo train, 1 epoch{' sync_bn' if backend == 'nccl' else ''}",
                     _torchrun, a, device, out, checks.deadline)
    if run is None:
        run_failed = Skip("the torchrun run failed")
        checks.run(f"{backend} process group", _raise, run_failed)
        checks.run("SyncBatchNorm in use", _raise, run_failed)
        return
    checks.run(f"{backend} process group", _process_group, run, backend)
    checks.run("SyncBatchNorm in use", _sync_bn, run, device)


# ---------------------------------------------------------------------------- part 6: end to end vs timm

# row: (model, dataset kind, img size, batch, train images, epochs); quick: tiny CPU stand-ins
E2E_ROWS = {"resnet20 cifar 32 px": ("resnet20_cifar", "cifar", 32, 256, 16384, 2),
            "resnet50 jpeg folder 224 px": ("resnet50", "folder", 224, 128, 1536, 2)}
E2E_QUICK = {"resnet20 cifar 32 px": ("resnet20_cifar", "cifar", 32, 16, 64, 1),
             "resnet50 jpeg folder 224 px": ("resnet10t", "folder", 32, 8, 32, 1)}
E2E_TARGET = 1.0  # attnzoo train img/s over timm train.py img/s, at least
TIMM_RATE = re.compile(r"Train: (\d+) \[.*?\(\s*[\d.]+s,\s*([\d.]+)/s\)")


def timm_train_script() -> Path:
    """timm's train.py of the installed timm version, exported beforehand (an ignored path) by
    benchmarks/timm_train_script.py from a timm checkout: `git show v<version>:train.py`."""
    import timm

    return HERE / "out" / "timm" / timm.__version__ / "train.py"


def _write_cifar(root: Path, n_train: int, n_test: int) -> Path:
    """CIFAR-10's python format (cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta),
    random images: what torchvision's CIFAR10 (timm's torch/cifar10) and attnzoo's cifar10 read."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    files = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        data = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, n).tolist(), "batch_label": name}
        (d / name).write_bytes(pickle.dumps(data))
    meta = {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n_train // 5}
    (d / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


class SyncCount:
    """Wraps a train_one_epoch function: counts its batches and, on CUDA, the host syncs inside it
    (torch.cuda.set_sync_debug_mode("warn") warns once per synchronizing operation)."""

    def __init__(self):
        self.syncs, self.steps = 0, 0

    def wrap(self, fn, loader_arg: int):
        import warnings

        import torch

        def counted(*args, **kwargs):
            loader = args[loader_arg] if len(args) > loader_arg else kwargs["loader"]
            self.steps += len(loader)
            if not torch.cuda.is_available():
                return fn(*args, **kwargs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    return fn(*args, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
                    self.syncs += sum("synchroniz" in str(w.message) for w in caught)
        return counted


def e2e_worker(side: str, report: str, argv: list[str]) -> int:
    """In a fresh process: attnzoo's CLI or timm's train.py (`argv[0]`, run as a module so its
    train_one_epoch can be wrapped), with the host syncs of training counted into `report`."""
    import importlib.util

    import attnzoo  # noqa: F401  (registers attnzoo's networks, resnet20_cifar included, in timm)

    count = SyncCount()
    if side == "attnzoo":
        import attnzoo.engine.train as T
        from attnzoo.cli import main

        T.train_one_epoch = count.wrap(T.train_one_epoch, 5)
        status = main(argv)
    else:
        import torchvision.datasets.cifar as cifar

        cifar.check_integrity = lambda *a, **k: True  # generated files: not the official checksums
        spec = importlib.util.spec_from_file_location("timm_train", argv[0])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.train_one_epoch = count.wrap(module.train_one_epoch, 2)
        sys.argv = argv
        status = module.main() or 0
    Path(report).write_text(json.dumps({"syncs": count.syncs, "steps": count.steps}))
    return status


def _e2e_commands(row, data: Path, out: Path, device, workers: int, quick: bool):
    model, kind, size, batch, _, epochs = row
    cuda = device.type == "cuda"
    attnzoo = ["train", "--model", model, "--data", "cifar10" if kind == "cifar" else "imagefolder",
               "--data-dir", str(data), "--epochs", str(epochs), "--batch-size", str(batch),
               "--device", device.type, "--out-dir", str(out), "--name", "attnzoo", "--quiet",
               "--set", f"data.img_size={size}", "--set", f"data.workers={workers}",
               "--set", f"data.augment={'crop_flip' if kind == 'cifar' else 'imagenet'}",
               "--set", "optim.lr=0.1", "--set", "schedule.name=cosine",
               "--set", f"train.amp={'bf16' if cuda else 'none'}", "--set", f"train.channels_last={str(cuda).lower()}",
               "--set", "train.deterministic=false"]
    if model == "resnet50":
        attnzoo += ["--set", "model.kwargs.num_classes=10"]
    timm = [str(timm_train_script()), "--data-dir", str(data), "--model", model, "--num-classes", "10",
            "--img-size", str(size), "-b", str(batch), "--epochs", str(epochs), "--warmup-epochs", "0",
            "--sched", "cosine", "--lr", "0.1", "--opt", "momentum", "--weight-decay", "5e-4", "--smoothing", "0",
            "--color-jitter", "0", "--workers", str(workers), "--log-interval", "100000", "--checkpoint-hist", "1",
            "--output", str(out / "timm"), "--device", device.type]
    timm += (["--dataset", "torch/cifar10", "--train-split", "train", "--val-split", "test"] if kind == "cifar"
             else ["--train-split", "train", "--val-split", "val"])
    if cuda:  # the same amp dtype, layout and pinned memory; timm's prefetcher is on by default
        timm += ["--amp", "--amp-dtype", "bfloat16", "--channels-last", "--pin-mem"]
    return attnzoo, timm


def _e2e_run(side, cmd, out, deadline):
    report = out / f"{side}.json"
    launcher = [sys.executable, str(Path(__file__).resolve()), "--e2e-worker", side, str(report), "--"]
    left = deadline - time.time()
    if left < 5:
        raise Skip("time budget of the part spent")
    proc = subprocess.run(launcher + cmd, capture_output=True, text=True, timeout=left)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Failed(f"{side} exit status {proc.returncode}: {tail[0][:300]}")
    counts = json.loads(report.read_text())
    if side == "attnzoo":
        rows = [json.loads(line) for line in (out / "attnzoo" / "metrics.jsonl").read_text().splitlines()]
        rate = rows[-1]["img_per_s"]
    else:
        rates = TIMM_RATE.findall(proc.stdout + proc.stderr)
        if not rates:
            raise Failed("no 'Train: ... /s' line in timm train.py's log")
        rate = float(rates[-1][1])
    return {"img_per_s": rate, "syncs_per_step": counts["syncs"] / max(counts["steps"], 1), **counts}


def _e2e(a, device, tmp: Path, name: str, row, deadline):
    import torch

    _, kind, size, batch, n_train, _ = row
    data = tmp / f"data-{kind}"
    if not data.exists():
        if kind == "cifar":
            _write_cifar(data, n_train, max(batch, n_train // 8))
        else:  # 320x400 JPEGs of noise and gradients (a photo's decode cost), 10 classes
            from loader_throughput import make_folder

            make_folder(data, n_train, max(batch, n_train // 8), classes=10)
    out = tmp / name.replace(" ", "-")
    out.mkdir()
    workers = max(1, min(12, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2) - 1))
    attnzoo, timm = _e2e_commands(row, data, out, device, workers, a.quick)
    print(f"    attnzoo: attnzoo {' '.join(attnzoo)}\n    timm:    python {' '.join(timm)}", flush=True)
    ours = _e2e_run("attnzoo", attnzoo, out, deadline)
    data = {"attnzoo": ours, "attnzoo_command": "attnzoo " + " ".join(attnzoo),
            "timm_command": "python " + " ".join(timm), "workers": workers}
    if a.quick:
        raise Skip(f"quick: timm train.py runs in the full check only; attnzoo {ours['img_per_s']:.0f} img/s")
    if not timm_train_script().is_file():
        import timm as timm_lib

        raise Skip(f"no timm train.py for timm {timm_lib.__version__} ({timm_train_script()}; export it with "
                   f"benchmarks/timm_train_script.py); attnzoo {ours['img_per_s']:.0f} img/s")
    theirs = _e2e_run("timm", timm, out, deadline)
    ratio = ours["img_per_s"] / theirs["img_per_s"]
    syncs = "n/a (cpu)" if device.type != "cuda" else f"{ours['syncs_per_step']:.2f} vs {theirs['syncs_per_step']:.2f}"
    data.update(timm=theirs, ratio=ratio, torch_threads=torch.get_num_threads(),
                summary=f"attnzoo {ours['img_per_s']:.0f} img/s vs timm train.py {theirs['img_per_s']:.0f} img/s: "
                        f"{ratio:.2f}x (target >= {E2E_TARGET:g}x); host syncs per step {syncs}; {workers} workers")
    if device.type == "cuda" and not a.quick and ratio < E2E_TARGET:
        raise Failed(f"{ratio:.2f}x timm train.py < {E2E_TARGET:g}x", data)
    return data


def part_e2e(a, checks: Checks, device) -> None:
    with tempfile.TemporaryDirectory(prefix="gpu-check-e2e-") as tmp:
        for name, row in (E2E_QUICK if a.quick else E2E_ROWS).items():
            checks.run(f"attnzoo train vs timm train.py, {name}", _e2e, a, device, Path(tmp), name, row,
                       checks.deadline)


PART_FUNCTIONS = {1: part_ops, 2: part_steps, 3: part_throughput, 4: part_cli, 5: part_torchrun, 6: part_e2e}


# ---------------------------------------------------------------------------- the parent

def environment(device: str) -> dict:
    """Device name and library versions; imports torch only for a CUDA device's name."""
    import importlib.metadata as md
    import platform

    def version(dist_prefix):
        for d in md.distributions():
            name = (d.metadata["Name"] or "").lower()
            if name == dist_prefix or name.startswith(dist_prefix + "-"):
                return f"{d.version} ({name})" if name != dist_prefix else d.version
        return None

    env = {"device": f"cpu ({platform.processor() or platform.machine()})", "torch": version("torch"),
           "cuda": None, "cudnn": None, "triton": version("triton"), "timm": version("timm"),
           "cupy": version("cupy"), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    if device == "cuda":
        import torch

        env.update(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def run_part(part: int, a, budget: float, records: Path, log_dir: Path) -> dict:
    """Part `part` in a child process under `budget` seconds; its records appended to `records`."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(part), "--records", str(records),
           "--deadline", str(time.time() + budget), "--device", a.device]
    cmd += (["--quick"] if a.quick else []) + (["--cupy-reference", a.cupy_reference] if a.cupy_reference else [])
    env = dict(os.environ)
    if part == 1 and a.device == "cpu":
        env["TRITON_INTERPRET"] = "1"  # read when triton is imported: only a fresh process can set it
    log = log_dir / f"part{part}.log"
    t0, cpu0 = time.time(), _children_cpu_seconds()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stderr=err, env=env, start_new_session=True)
        try:
            status = proc.wait(timeout=budget + GRACE_S)  # the checks stop starting at `budget`
            reason = "" if status == 0 else f"the part's process ended with status {status}: " + _tail(log)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and what it started (torchrun, the CLI)
            proc.wait()
            reason = f"killed after {budget + GRACE_S:.0f} s (time budget {budget:.0f} s): " + _tail(log)
    return {"part": part, "name": PARTS[part], "seconds": round(time.time() - t0, 1), "budget_s": budget,
            "cpu_seconds": round(_children_cpu_seconds() - cpu0, 1), "status": "FAILED" if reason else "ran",
            "reason": reason}


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def write_report(out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    env = report["environment"]
    lines = [f"# GPU check on {env['device']}", "",
             f"torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), triton {env['triton']}, "
             f"timm {env['timm']}, cupy {env['cupy']}, Python {env['python']}; "
             f"{'quick (tiny sizes)' if report['quick'] else 'full sizes'}; {report['started']}.", "",
             f"Operator tolerances (||out - ref|| / ||ref||, ref = `reference` in float64 on the same inputs): "
             f"{', '.join(f'{k} {v:g}' for k, v in TOLERANCES.items())}. Loss of a mixed-precision step vs "
             f"float32: {', '.join(f'{k} {v:g}' for k, v in LOSS_TOLERANCE.items())} x max(1, |loss|). "
             f"Speed targets: triton >= {TARGETS['reference']:g}x reference, >= {TARGETS['cupy']:g}x the "
             "official kernels.", "",
             f"Totals: {report['totals']}.", "",
             "| part | seconds (budget) | CPU seconds | status |", "|---|---:|---:|---|"]
    for p in report["parts"]:
        lines.append(f"| {p['part']}. {p['name']} | {p['seconds']} ({p['budget_s']:.0f}) | {p.get('cpu_seconds', 0)} | "
                     f"{p['status']}{': ' + p['reason'] if p['reason'] else ''} |")
    lines += ["", "| check | status | result |", "|---|---|---|"]
    for r in report["checks"]:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        lines.append(f"| {r['id']} {r['check']} | {status.replace('|', '/')} | {r['summary'].replace('|', '/')} |")
    (out_dir / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (what the test suite runs on a CPU)")
    parser.add_argument("--skip", default="", help="comma-separated part numbers to leave out")
    parser.add_argument("--only", default="", help="comma-separated part numbers to run (default all)")
    parser.add_argument("--cupy-reference", default=None, help="checkout of hszhao/SAN (holds lib/sa)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every part's time budget, e.g. 2 to rerun one part with more time")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--torchrun-worker", help=argparse.SUPPRESS)
    parser.add_argument("--e2e-worker", nargs=2, metavar=("SIDE", "REPORT"), help=argparse.SUPPRESS)
    a, rest = parser.parse_known_args(argv)
    if a.torchrun_worker:
        return torchrun_worker(a.torchrun_worker, rest[1:] if rest[:1] == ["--"] else rest)
    if a.e2e_worker:
        return e2e_worker(*a.e2e_worker, rest[1:] if rest[:1] == ["--"] else rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if a.child:
        import torch

        device = torch.device(a.device)
        PART_FUNCTIONS[a.child](a, Checks(a.child, a.records, a.deadline), device)
        return 0
    try:
        chosen = [int(p) for p in (a.only or ",".join(map(str, PARTS))).split(",") if p]
        skipped = {int(p) for p in a.skip.split(",") if p}
    except ValueError:
        parser.error("--only/--skip take part numbers, e.g. --skip 3,5")
    if not set(chosen) <= set(PARTS) or not skipped <= set(PARTS):
        parser.error(f"parts are {', '.join(f'{n} ({t})' for n, t in PARTS.items())}")
    if a.cupy_reference:
        a.cupy_reference = str(Path(a.cupy_reference).resolve())  # the parts run from other folders too
        if not (Path(a.cupy_reference) / "lib" / "sa" / "functional.py").is_file():
            parser.error(f"--cupy-reference {a.cupy_reference}: no lib/sa/functional.py there (a hszhao/SAN checkout)")
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here (use --device cpu --quick for the CPU run)")
    report = {"environment": environment(a.device), "quick": a.quick, "args": vars(a),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "parts": [], "checks": [], "totals": {}}
    print(f"gpu_check on {report['environment']['device']}: torch {report['environment']['torch']}, "
          f"triton {report['environment']['triton']}, timm {report['environment']['timm']}", flush=True)
    budgets = {p: s * a.budget_scale for p, s in (QUICK_BUDGETS if a.quick else BUDGETS).items()}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for part in chosen:
            if part in skipped:
                report["parts"].append({"part": part, "name": PARTS[part], "seconds": 0, "budget_s": 0,
                                        "status": "skipped", "reason": "--skip"})
                continue
            print(f"== part {part}: {PARTS[part]} (budget {budgets[part]:.0f} s)", flush=True)
            records = Path(tmp) / f"part{part}.jsonl"
            records.touch()
            result = run_part(part, a, budgets[part], records, Path(tmp))
            if result["reason"]:
                print(f"[{part}] FAILED   part {part} ({result['reason']})", flush=True)
            report["parts"].append(result)
            report["checks"] += [json.loads(line) for line in records.read_text().splitlines()]
            statuses = [r["status"] for r in report["checks"]] + [p["status"] for p in report["parts"]]
            report["totals"] = {s: statuses.count(s) for s in ("ok", "FAILED", "skipped")}
            write_report(a.out_dir, report)
    print(f"totals {report['totals']}; wrote {a.out_dir / 'gpu_check.json'} and .md", flush=True)
    return 1 if report["totals"].get("FAILED") else 0


if __name__ == "__main__":
    sys.exit(main())

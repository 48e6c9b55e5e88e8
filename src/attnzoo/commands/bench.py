"""`attnzoo bench`: training and inference throughput, peak memory, params and MACs per network.

For each model, on random inputs of one batch size:

- inference img/s: forward passes in eval mode under `torch.inference_mode`;
- train img/s: forward + cross-entropy + backward + SGD step (momentum 0.9) in train mode;
- peak memory (MiB) of each phase, counted from before the model was built, so it covers the
  weights, gradients, optimizer state and activations:
  * CUDA: `torch.cuda.max_memory_allocated` (peak stats reset before the model is built) minus
    the memory allocated before it;
  * CPU: the rise of the process's peak resident set size (`VmHWM` in /proc/self/status, reset
    through /proc/self/clear_refs) over the resident size before the model was built (allocator
    and page granularity make it approximate to about a MiB). Where the peak cannot be
    reset (not Linux), `resource.getrusage` is used and a model's peak only counts when it
    exceeds every earlier one (`mem_note` says so). The C allocator keeps memory an earlier
    model freed, which would hide part of the next model's peak, so on CPU each model is
    benchmarked in a fresh Python process by default (`isolate=True`; a few seconds of start-up
    each; the model's registering module is imported there, so models registered in an
    importable module of the caller work too).
- params and MACs per image (`attnzoo.engine.flops.count_flops`, at the benched size);
- for a 'host+block' model (a block put in by `attnzoo.add_attention`), `inserted`: what the
  blocks cost against the bare host, which is benchmarked too (added before it when not listed):
  params and MACs added, train and inference img/s as ratios to the host's.

Timing: `warmup` untimed iterations, then `steps` timed ones, with CUDA synchronised around them.
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import torch

from ..engine.device import resolve_device
from ..engine.flops import count_flops, human
from ..errors import UserError
from ..models.surgery import split_model_name
from .info import cost_against_host, default_img_size, format_cost

_MIB = 2 ** 20


# ---------------------------------------------------------------------------- memory probes

class _CpuPeak:
    """Peak resident set size of this process, resettable on Linux."""

    def __init__(self):
        self.exact = self._reset()
        self.base = self._rss()

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # kB
        except OSError:
            return None
        return None

    def _reset(self) -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)
            return self._status("VmHWM") is not None
        except OSError:
            return False

    def _rss(self) -> int:
        rss = self._status("VmRSS")
        if rss is not None:
            return rss
        return self._ru_maxrss()

    @staticmethod
    def _ru_maxrss() -> int:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB on Linux

    def start_phase(self) -> None:
        gc.collect()
        if self.exact:
            self._reset()

    def peak(self) -> int:
        """Bytes above the resident size measured when this probe was made."""
        peak = self._status("VmHWM") if self.exact else self._ru_maxrss()
        return max(0, (peak or 0) - self.base)


class _CudaPeak:
    def __init__(self, device: torch.device):
        self.device = device
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        self.base = torch.cuda.memory_allocated(device)
        self.exact = True

    def start_phase(self) -> None:
        gc.collect()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return max(0, torch.cuda.max_memory_allocated(self.device) - self.base)


# ---------------------------------------------------------------------------- measuring

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _prime(device: torch.device) -> None:
    """A tiny conv forward+backward, so libraries' one-time buffers are not billed to a model."""
    conv = torch.nn.Conv2d(3, 4, 3).to(device)
    out = conv(torch.randn(2, 3, 8, 8, device=device, requires_grad=True))
    out.mean().backward()
    _sync(device)


def bench_one(name: str, batch_size: int = 32, img_size: int | None = None, device="cpu",
              steps: int = 10, warmup: int = 3, model_kwargs: dict | None = None) -> dict:
    """One row of `benchmark` (see the module docstring for what each figure means)."""
    from .. import create_model

    dev = resolve_device(device)
    _prime(dev)
    probe = _CudaPeak(dev) if dev.type == "cuda" else _CpuPeak()
    model = create_model(name, **dict(model_kwargs or {}))
    if img_size is None:
        img_size = default_img_size(name, model)
    model.to(dev)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    params = sum(p.numel() for p in model.parameters())
    in_chans = int((model_kwargs or {}).get("in_chans", 3))
    macs = count_flops(model, (1, in_chans, img_size, img_size), device=dev)["macs"]

    x = torch.randn(batch_size, in_chans, img_size, img_size, device=dev)
    model.eval()

    def infer():
        with torch.inference_mode():
            model(x)

    probe.start_phase()
    infer_s = _timed(infer, steps, warmup, dev)
    infer_peak = probe.peak()

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = None

    def step():
        nonlocal target
        logits = _logits(model(x))
        if target is None:  # classes from the output, for models without num_classes
            target = torch.randint(0, logits.shape[-1], (batch_size,), device=dev)
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    probe.start_phase()
    train_s = _timed(step, steps, warmup, dev)
    train_peak = probe.peak()
    row = {
        "model": name, "device": str(dev), "batch_size": batch_size, "img_size": img_size,
        "num_classes": num_classes, "params": params, "macs": macs,
        "train_img_per_s": batch_size / train_s, "infer_img_per_s": batch_size / infer_s,
        "train_peak_mem_mb": train_peak / _MIB, "infer_peak_mem_mb": infer_peak / _MIB,
        "steps": steps, "warmup": warmup,
        "mem_note": ("cuda max_memory_allocated" if dev.type == "cuda" else
                     "cpu peak RSS rise (VmHWM)" if probe.exact else
                     "cpu ru_maxrss rise: counts only above every earlier peak"),
    }
    model = optimizer = x = None  # the closures' references too: freed before the next model
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _child_main(request_path: str) -> None:
    """Body of the isolated benchmark process: reads the request JSON, writes the reply beside it.

    Request: {"args": [...bench_one args], "threads": int, "module": str | None}; `module`
    registers the model (imported first, for models registered outside attnzoo). Reply:
    {"ok": row} or {"error": kind, "message": str}.
    """
    request = json.loads(Path(request_path).read_text())
    try:
        torch.set_num_threads(request["threads"])
        module = request.get("module")
        if module and module not in ("__main__", "__mp_main__"):
            import importlib

            importlib.import_module(module)
        reply = {"ok": bench_one(*request["args"])}
    except BaseException as e:  # noqa: BLE001  (reported to the parent, never lost)
        reply = {"error": "user" if isinstance(e, UserError) else type(e).__name__, "message": str(e)}
    Path(request_path + ".reply").write_text(json.dumps(reply))


# A fresh interpreter (not multiprocessing, whose 'spawn' re-runs the caller's main script).
_CHILD_CODE = """import sys, json
sys.path[:0] = json.loads(sys.argv[2])
from attnzoo.commands.bench import _child_main
_child_main(sys.argv[1])
"""


def _bench_isolated(args: tuple) -> dict:
    import subprocess
    import sys
    import tempfile

    try:
        import timm

        module = timm.models.model_entrypoint(args[0]).__module__
    except Exception:  # noqa: BLE001  (unknown here: the child reports it)
        module = None
    with tempfile.TemporaryDirectory(prefix="attnzoo-bench-") as tmp:
        request = Path(tmp) / "request.json"
        try:
            request.write_text(json.dumps({"args": list(args), "threads": torch.get_num_threads(),
                                           "module": module}))
        except TypeError:
            raise UserError(f"bench: model options {args[-1]} are not JSON data; pass numbers, "
                            "strings, lists and mappings only") from None
        proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, str(request), json.dumps(sys.path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reply_path = Path(str(request) + ".reply")
        if not reply_path.exists():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no message"]
            raise RuntimeError(f"the benchmark process of '{args[0]}' ended without a result "
                               f"(exit status {proc.returncode}, out of memory?): {tail[0]}")
        reply = json.loads(reply_path.read_text())
    if "ok" in reply:
        return reply["ok"]
    if reply["error"] == "user":
        raise UserError(reply["message"])
    raise RuntimeError(f"bench of '{args[0]}' failed: {reply['error']}: {reply['message']}")


def benchmark(models: list[str], batch_size: int = 32, img_size: int | None = None, device="cpu",
              steps: int = 10, warmup: int = 3, model_kwargs: dict | None = None,
              isolate: bool | None = None) -> list[dict]:
    """Benchmark each network in `models` (same batch, size and device); one dict per model.

    Keys: model, device, batch_size, img_size, num_classes, params, macs (per image),
    train_img_per_s, infer_img_per_s, train_peak_mem_mb, infer_peak_mem_mb, steps, warmup, mem_note,
    and `inserted` for 'host+block' models (module docstring), whose bare host gets a row too.
    `model_kwargs` go to every model's constructor. `img_size=None`: each model's own size.
    `isolate`: run each model in a fresh subprocess (default: on CPU, where memory is measured
    from the resident set; see the module docstring).
    """
    if not models:
        raise UserError("bench: give at least one model, e.g. --models resnet20_cifar,resnet56_cifar")
    for key, value in (("batch_size", batch_size), ("steps", steps)):
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}")
    if warmup < 0:
        raise UserError(f"warmup must be at least 0, got {warmup}")
    if img_size is not None and img_size < 1:
        raise UserError(f"img_size must be at least 1, got {img_size}")
    listed, models = list(models), []
    for name in listed:  # every name is checked before any time is spent
        host, block = split_model_name(name)
        if block and host not in listed and host not in models:
            models.append(host)  # the bare host the blocks are measured against
        models.append(name)
    dev = resolve_device(device)
    if isolate is None:
        isolate = dev.type == "cpu"
    rows = []
    for name in models:
        args = (name, batch_size, img_size, str(dev), steps, warmup, model_kwargs)
        rows.append(_bench_isolated(args) if isolate else bench_one(*args))
    measured = {r["model"]: r for r in rows}
    for row in rows:
        host, block = split_model_name(row["model"])
        if block:
            row["inserted"] = {"host": host, "block": block,
                               **cost_against_host(row, measured[host])}
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of `benchmark` rows."""
    if not rows:
        return ""
    first = rows[0]
    lines = [f"device {first['device']}, batch {first['batch_size']}, "
             f"{first['steps']} timed steps after {first['warmup']} warm-up; MACs per image; "
             f"memory: {first['mem_note']}", "",
             "| model | img size | params | MACs | train img/s | infer img/s | train peak MiB "
             "| infer peak MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['img_size']} | {human(r['params'])} | {human(r['macs'])} | "
                     f"{r['train_img_per_s']:.1f} | {r['infer_img_per_s']:.1f} | "
                     f"{r['train_peak_mem_mb']:.1f} | {r['infer_peak_mem_mb']:.1f} |")
    inserted = [r for r in rows if r.get("inserted")]
    if inserted:
        lines += ["", "Inserted blocks against the bare host:", ""]
        lines += [f"- {r['model']}: {format_cost(r['inserted'])}" for r in inserted]
    return "\n".join(lines)


def run(args) -> int:
    """`attnzoo bench --models A,B [...]`: the table, and the rows as JSON with `--json`."""
    from ..engine.device import out_of_memory_hint
    from ..errors import check_writable

    if args.json_out:
        check_writable(args.json_out, "--json")
    with out_of_memory_hint(args.batch_size, args.img_size):
        rows = benchmark(args.models, batch_size=args.batch_size, img_size=args.img_size,
                         device=args.device, steps=args.steps, warmup=args.warmup)
    print(format_table(rows))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0

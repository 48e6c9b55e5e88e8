"""Helpers shared by the benchmark scripts. Run them from the repository root with attnzoo
importable (`PYTHONPATH=src python benchmarks/x.py ...` or an installed package)."""
from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import torch

# Learned gates and scales of the official LSAS and SB code (w, b, w2 ... b5, lambd): drawn
# around their working range so the attention is far from its identity initialisation
_GATE_LEAVES = {"w", "b", "w2", "b2", "w3", "b3", "w4", "b4", "w5", "b5", "lambd"}


def load_module(path: Path, name: str):
    """Import one file of an official checkout (not an installed package) as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int) -> None:
    """Random non-trivial values for every floating parameter and buffer (BatchNorm statistics
    included), so that a faithfulness comparison exercises every weight in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        leaf = name.rsplit(".", 1)[-1]
        if not t.is_floating_point():
            continue
        if leaf in _GATE_LEAVES:
            t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (0.5 if leaf[0] in "wl" else 0))
        elif leaf == "running_var":
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif leaf in ("running_mean", "bias"):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        elif t.ndim == 1 and re.search(r"(bn3|downsample\.1)\.weight$", name):
            # small last scale of every residual branch, as in trained ResNets: keeps deep features
            # O(1) instead of growing with depth (float32 round-off would be amplified)
            t.copy_(torch.rand(t.shape, generator=g) * 0.2 + 0.05)
        elif t.ndim <= 1:  # norm weights and other scales
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)


# ------------------------------------------------------------------------ train-mode fidelity

TRAIN_TOL = 1e-4  # every train-mode difference, relative to the largest value of its kind


def _max_abs(tensors) -> float:
    return max((float(t.detach().abs().max()) for t in tensors if t.numel()), default=0.0)


def _train_step(theirs, ours, to_ours, x, seed: int) -> tuple[dict, dict]:
    """One train-mode forward of both networks on x, a backward of the same random projection of
    the output; returns (differences, the official gradients by official key)."""
    theirs.train(), ours.train()
    torch.manual_seed(seed)
    y_ref = theirs(x)
    torch.manual_seed(seed)
    y = ours(x)
    g = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)
    y_ref.backward(g)
    y.backward(g)
    ref_grads = {k: p.grad for k, p in theirs.named_parameters() if p.grad is not None}
    mapped = to_ours(dict(ref_grads))
    own = {k: p.grad for k, p in ours.named_parameters() if p.grad is not None}
    if set(mapped) != set(own):  # the converter's key map must cover every gradient, both ways
        raise RuntimeError(f"gradient keys differ: official-only {sorted(set(mapped) - set(own))[:5]}, "
                           f"attnzoo-only {sorted(set(own) - set(mapped))[:5]}")
    largest = _max_abs(mapped.values())
    grad_diff = max(float((own[k] - v).abs().max()) for k, v in mapped.items())
    stats_ref = {k: v for k, v in to_ours(dict(theirs.named_buffers())).items()
                 if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    stats = {k: v for k, v in ours.named_buffers() if k in stats_ref}
    if set(stats) != set(stats_ref):
        raise RuntimeError(f"BatchNorm statistics differ in keys: {sorted(set(stats_ref) ^ set(stats))[:5]}")
    stat_rel = max((float((stats[k].double() - v.double()).abs().max()) / max(_max_abs([v.double()]), 1e-12)
                    for k, v in stats_ref.items()), default=0.0)
    out = {"train_logits_max_rel_diff": float((y - y_ref).detach().abs().max()) / _max_abs([y_ref]),
           "train_grad_max_rel_diff": grad_diff / largest, "train_grad_largest": largest,
           "train_grads_compared": len(mapped), "train_running_stats_max_rel_diff": stat_rel,
           "train_running_stats_compared": len(stats)}
    return out, mapped


def _worst(r: dict) -> float:
    return max(r["train_logits_max_rel_diff"], r["train_grad_max_rel_diff"], r["train_running_stats_max_rel_diff"])


def train_check(theirs, ours, to_ours, x, seed: int = 0, tol: float = TRAIN_TOL) -> dict:
    """Train-mode fidelity: the official network `theirs` and attnzoo's `ours` (same weights, loaded
    through the converter `to_ours(official_state) -> attnzoo_state`) each take one train-mode
    forward on `x` and a backward of the same random projection of the output; then the logits,
    every parameter gradient and every BatchNorm running statistic are compared through the
    converter's key map, each relative to the largest value of its kind (the largest gradient of
    the network for gradients). Runs in float32; where that exceeds `tol`, both run again from the
    same start in float64, and the official network's own float32 round-off (its float32 gradients
    against its float64 ones) is reported beside: float64 then judges. Both networks are modified
    (one step of statistics, gradients): pass copies if they are needed afterwards.
    """
    start_t, start_o = copy.deepcopy(theirs), copy.deepcopy(ours)
    r32, grads32 = _train_step(theirs, ours, to_ours, x, seed)
    res = {f"{k}_float32" if k.endswith(("diff",)) else k: v for k, v in r32.items()}
    res["train_dtype"] = "float32"
    res["train_tol"] = tol
    if _worst(r32) > tol:
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # tensors the networks make on the fly (positions)
        try:
            r64, grads64 = _train_step(start_t.double(), start_o.double(), to_ours, x.double(), seed)
        finally:
            torch.set_default_dtype(default)
        res.update({f"{k}_float64": v for k, v in r64.items() if k.endswith("diff")})
        res["train_official_float32_grad_roundoff"] = max(
            float((grads32[k].double() - v).abs().max()) for k, v in grads64.items()) / r64["train_grad_largest"]
        res["train_dtype"] = "float64"
        r32 = r64
    res["train_within_tol"] = _worst(r32) <= tol
    return res

"""Each family's own attention, recorded during a forward pass without touching the layers.

`AttentionRecorder(model)` finds the attention modules of a network, wherever they sit (built in
or put in by `attnzoo.add_attention`), and records, per module name, what the module attends
with. A module takes part by having a class attribute `attention_kind` and a method
`attention_weights(x)` that computes its attention from its input x, as every attnzoo block has:

    kind             attention_weights(x)      blocks
    "channel"        (N, C)                    SE, LSAS (the full gate σ(z)·σ(s1)…σ(sk)), the SB
                                               seed's BatchNorm SE, Shift-and-Balance (the shift
                                               λ·A(x), which is added, not multiplied)
    "local"          (N, G, k*k, H*W)          SAN's `SAM` (`kernel_size` = k)
    "global"         (N, heads, H*W, H*W)      LESA's binary branch
    "class_spatial"  (N, heads, K, H*W)        IDA's `InterventionalClassifier`

timm's gated modules (SE, ECA, CBAM channel gate) are recorded from the output of their `gate`
activation instead. Local and global attention are kept for the first `MAX_SPATIAL_SAMPLES`
images of a batch. Recorded tensors are detached and on the CPU; gates are recomputed from the
module's input (one extra evaluation of a small MLP per block).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..models.surgery import stage_of

KINDS = ("channel", "local", "global", "class_spatial")


MAX_SPATIAL_SAMPLES = 4  # local / global attention is recorded for the first few images only


def _records_itself(module: nn.Module) -> bool:
    return getattr(type(module), "attention_kind", None) in KINDS and hasattr(module, "attention_weights")


def _timm_gate(module: nn.Module):
    """The `gate` activation child of timm's gated attention modules (SE, ECA, CBAM), or None."""
    if not type(module).__module__.startswith("timm."):
        return None
    gate = getattr(module, "gate", None)
    return gate if isinstance(gate, nn.Module) else None


class AttentionRecorder:
    """Context manager that records every attention module's attention on forward passes.

    `records` maps a module name to {"kind": ..., "tensors": [one per forward pass], "in_hw":
    the input's (H, W), "out_hw": the attention grid's (H, W) where known, and for local
    attention "kernel_size"}. `active` and `kinds` switch recording off, all or by kind.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.records: dict = {}
        self.active = True  # hooks record only while True
        self.kinds = KINDS  # and only these kinds
        self._handles = []
        for name, module in model.named_modules():
            if _records_itself(module):
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name, module)))
                continue
            gate = _timm_gate(module)
            if gate is not None:
                self._handles.append(gate.register_forward_hook(self._gate_hook(name)))

    @property
    def found(self) -> bool:
        return bool(self._handles)

    def _wanted(self, kind) -> bool:
        return self.active and kind in self.kinds

    def _add(self, name, kind, tensor, **extra):
        rec = self.records.setdefault(name, {"kind": kind, "tensors": [], **extra})
        rec["tensors"].append(tensor.detach().float().cpu())

    def _pre_hook(self, name, module):
        kind = type(module).attention_kind

        def hook(mod, args):
            if not self._wanted(kind) or not args or not torch.is_tensor(args[0]):
                return
            x = args[0]
            if kind in ("local", "global"):
                x = x[:MAX_SPATIAL_SAMPLES]
            with torch.no_grad():
                att = module.attention_weights(x)
            extra = {"in_hw": tuple(x.shape[-2:]) if x.ndim == 4 else None}
            if kind == "local":
                extra["kernel_size"] = int(module.kernel_size)
                s = int(getattr(module, "stride", 1) or 1)
                extra["out_hw"] = (-(-x.shape[-2] // s), -(-x.shape[-1] // s))
            self._add(name, kind, att, **extra)
        return hook

    def _gate_hook(self, name):
        def hook(module, args, output):
            if not self._wanted("channel"):
                return
            # a channel gate (N, C, 1, 1), or ECA's (N, 1, C)
            if (output.ndim == 4 and output.shape[-2:] == (1, 1)) or (output.ndim == 3 and output.shape[1] == 1):
                self._add(name, "channel", output.flatten(1))
        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return False

    def clear(self):
        self.records = {}

    def of_kind(self, kind: str) -> dict:
        return {n: r for n, r in self.records.items() if r["kind"] == kind}


# ------------------------------------------------------------------------------ channel gates

def summarize_gates(gates: dict, labels: torch.Tensor, num_classes: int) -> dict:
    """Per-stage summary of channel gates.

    `gates`: module name -> (N, C) gate of N samples; `labels` (N,) classes (single-label;
    None skips class_selectivity).
    Per module: mean (over samples and channels), channel_std (std over channels of the
    per-channel mean), sample_std (mean over channels of the std over samples),
    class_selectivity (share of each channel's variance over samples explained by the class,
    averaged over channels: between-class variance / total variance, 0 = class-agnostic gate,
    1 = the gate depends on the class only). A stage averages its modules.
    """
    per_module = {}
    onehot = None
    if labels is not None and labels.numel():
        onehot = torch.nn.functional.one_hot(labels.long().cpu(), num_classes).float()
    for name, g in gates.items():
        g = g.float()
        total_var = g.var(0, unbiased=False)  # (C,)
        entry = {"stage": stage_of(name), "channels": g.shape[1],
                 "mean": float(g.mean()), "channel_std": float(g.mean(0).std(unbiased=False)),
                 "sample_std": float(g.std(0, unbiased=False).mean())}
        if onehot is not None:
            counts = onehot.sum(0)  # (K,)
            class_mean = (onehot.T @ g) / counts.clamp_min(1)[:, None]  # (K, C)
            w = counts / counts.sum()
            between = (w[:, None] * (class_mean - g.mean(0)) ** 2).sum(0)  # (C,)
            entry["class_selectivity"] = float((between / total_var.clamp_min(1e-12))[total_var > 1e-12].mean()) \
                if (total_var > 1e-12).any() else 0.0
        per_module[name] = entry
    stages = {}
    for e in per_module.values():
        stages.setdefault(e["stage"], []).append(e)
    keys = ("mean", "channel_std", "sample_std", "class_selectivity")
    per_stage = {s: {"modules": len(es), **{k: sum(e[k] for e in es) / len(es) for k in keys if k in es[0]}}
                 for s, es in stages.items()}
    return {"stages": per_stage, "modules": per_module}


def class_mean_gates(gates: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C) gates -> (K, C) mean gate per class (NaN for a class without samples)."""
    onehot = torch.nn.functional.one_hot(labels.long().cpu(), num_classes).float()
    counts = onehot.sum(0)
    means = (onehot.T @ gates.float()) / counts.clamp_min(1)[:, None]
    means[counts == 0] = float("nan")
    return means


# ------------------------------------------------------------------------- spatial attention

def check_pixels(pixels, feat_hw) -> list[tuple[int, int]]:
    """(row, col) pixels of the final feature map, validated (UserError naming the valid range)."""
    h, w = feat_hw
    out = []
    for p in pixels or []:
        try:
            r, c = (int(v) for v in p)
        except (TypeError, ValueError):
            raise UserError(f"pixel {p!r}: expected ROW,COL integers of the {h}x{w} feature map") from None
        if not (0 <= r < h and 0 <= c < w):
            raise UserError(f"pixel ({r}, {c}) is outside the {h}x{w} feature map; "
                            f"valid rows 0..{h - 1}, columns 0..{w - 1}")
        out.append((r, c))
    return out


def _layer_pixel(pixel, feat_hw, layer_hw):
    r, c = pixel
    return (min(r * layer_hw[0] // feat_hw[0], layer_hw[0] - 1),
            min(c * layer_hw[1] // feat_hw[1], layer_hw[1] - 1))


def _layer_hw(rec, positions):
    for key in ("in_hw", "out_hw"):
        hw = rec.get(key)
        if hw and hw[0] * hw[1] == positions:
            return hw
    side = int(round(positions ** 0.5))
    return (side, positions // side)


def attention_at_pixels(records: dict, pixels, feat_hw, sample: int = 0) -> list[dict]:
    """Local (SAN) and global (LESA) attention of one sample at the given feature-map pixels.

    Returns [{"layer", "kind", "pixel" (in the layer's grid), "map" (k, k) or (H, W)}] with the
    attention averaged over groups / heads. Pixels are in the final feature map's grid and mapped
    to each layer's grid by scaling.
    """
    out = []
    for name, rec in records.items():
        if rec["kind"] not in ("local", "global"):
            continue
        att = rec["tensors"][0][sample] if sample < rec["tensors"][0].shape[0] else None
        if att is None:
            continue
        positions = att.shape[-1]
        hw = _layer_hw(rec, positions)
        for p in pixels:
            lr, lc = _layer_pixel(p, feat_hw, hw)
            idx = lr * hw[1] + lc
            if rec["kind"] == "local":
                k = rec.get("kernel_size") or int(round(att.shape[1] ** 0.5))
                m = att[..., idx].reshape(-1, k, k).mean(0)  # (k, k)
            else:
                m = att.reshape(-1, positions, positions)[:, idx].mean(0).reshape(hw)  # (H, W)
            out.append({"layer": name, "kind": rec["kind"], "pixel": (lr, lc), "map": m})
    return out


def class_spatial_maps(records: dict, targets: torch.Tensor, feat_hw, index=None) -> torch.Tensor | None:
    """IDA's class-specific spatial attention of each map's target class: (M, h, w), max 1.

    `targets` (M,) classes, `index` (M,) the image of each (default: image m for map m). Uses
    the last module of kind "class_spatial"; averages heads. None when there is none.
    """
    recs = [r for r in records.values() if r["kind"] == "class_spatial"]
    if not recs:
        return None
    att = torch.cat(recs[-1]["tensors"]) if len(recs[-1]["tensors"]) > 1 else recs[-1]["tensors"][0]
    if att.ndim == 4:  # (N, heads, K, HW)
        att = att.mean(1)
    n = targets.shape[0]
    rows = torch.arange(n) if index is None else torch.as_tensor(index).cpu().long()
    m = att[rows, targets.cpu().long()]  # (M, HW)
    hw = feat_hw if feat_hw[0] * feat_hw[1] == m.shape[-1] else _layer_hw(recs[-1], m.shape[-1])
    m = m.reshape(n, *hw).clamp_min(0)
    return m / m.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]

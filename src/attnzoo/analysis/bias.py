"""Attention-bias statistics of maps against object boxes (definitions in docs/analysis.md).

For one map M (H, W), non-negative with maximum 1, and the ideal region B (H, W) (the union of
the boxes of the explained class):

- energy_in_box = sum(M * B) / sum(M)                          (energy pointing game)
- pointing      = 1 if the arg-max pixel of M lies in B         (pointing game)
- A_t           = {M >= t}, the attended region at threshold t
- iou(t)        = |A_t & B| / |A_t | B|
- inside(t)     = |A_t & B| / |A_t|, the share of the attended region inside the box
- at each t a sample is exactly one of:
    position-biased  inside(t) <= eps        (attends essentially outside every box)
    range-biased     eps < inside(t) < 1-eps (overlaps the box but is not contained in it)
    contained        inside(t) >= 1-eps
    empty            A_t is empty (an all-zero map)
`eps` (default 0.05) is the tolerance for "essentially" outside / inside.
"""
from __future__ import annotations

import torch

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_EPS = 0.05
CATEGORIES = ("position", "range", "contained", "empty")


def map_box_stats(maps: torch.Tensor, masks: torch.Tensor, thresholds=DEFAULT_THRESHOLDS,
                  eps: float = DEFAULT_EPS) -> dict:
    """Per-sample statistics of maps (N, H, W) against box masks (N, H, W) bool.

    Returns tensors: energy (N,), pointing (N,), iou (N, T), inside (N, T), category (N, T) int
    (index into CATEGORIES).
    """
    m = maps.float()
    b = masks.to(m.device)
    bf = b.float()
    total = m.flatten(1).sum(1)
    energy = torch.where(total > 0, (m * bf).flatten(1).sum(1) / total.clamp_min(1e-12),
                         torch.zeros_like(total))
    peak = m.flatten(1).argmax(1)
    pointing = b.flatten(1).gather(1, peak[:, None])[:, 0].float() * (total > 0)
    t = torch.as_tensor(thresholds, dtype=m.dtype, device=m.device)
    att = (m.flatten(1)[:, None, :] >= t[None, :, None]).to(m.dtype)  # (N, T, HW) attended
    inter = torch.bmm(att, bf.flatten(1)[:, :, None])[..., 0]  # (N, T) |A_t & B|
    area = att.sum(2)  # |A_t|
    union = area + bf.flatten(1).sum(1)[:, None] - inter
    iou = inter / union.clamp_min(1)
    inside = inter / area.clamp_min(1)
    category = torch.full_like(area, 2, dtype=torch.long)  # contained
    category[inside < 1 - eps] = 1  # range
    category[inside <= eps] = 0  # position
    category[area == 0] = 3  # empty
    return {"energy": energy, "pointing": pointing, "iou": iou, "inside": inside, "category": category}


def cat_stats(parts: list) -> dict:
    """Concatenate per-batch outputs of `map_box_stats` (and any extra per-sample keys)."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}


def summarize(stats: dict, correct: torch.Tensor, thresholds=DEFAULT_THRESHOLDS,
              at: float = 0.5) -> dict:
    """JSON-ready summary for all / correct / wrong samples.

    Each group has: n, energy_in_box, pointing, and per threshold lists iou,
    position_bias_rate, range_bias_rate, contained_rate, empty_rate; plus the same rates as
    scalars at the threshold `at` (the nearest one in `thresholds`).
    """
    thresholds = [float(t) for t in thresholds]
    k = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - at))
    correct = correct.bool().cpu()
    out = {"thresholds": thresholds, "at_threshold": thresholds[k]}
    for group, sel in (("all", torch.ones_like(correct)), ("correct", correct), ("wrong", ~correct)):
        n = int(sel.sum())
        g = {"n": n}
        if n == 0:
            out[group] = g
            continue
        cat = stats["category"][sel]
        g["energy_in_box"] = float(stats["energy"][sel].mean())
        g["pointing"] = float(stats["pointing"][sel].mean())
        curves = {"iou": stats["iou"][sel].mean(0)}
        for i, name in enumerate(CATEGORIES):
            curves[f"{name}_bias_rate" if i < 2 else f"{name}_rate"] = (cat == i).float().mean(0)
        for key, curve in curves.items():
            g[key] = [round(float(v), 6) for v in curve]
            g[f"{key}@{thresholds[k]:g}"] = float(curve[k])
        out[group] = g
    return out

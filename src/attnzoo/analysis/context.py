"""Contextual bias: how much a network relies on the context instead of the object.

- Synthetic datasets: the metric (top-1 accuracy, or mAP for the multi-label variant) on the
  context-consistent split `test` against the context-swapped split `test_swapped`;
  swapped_gap = metric(test) - metric(test_swapped), in points. A network that recognises the
  object and not the background has a gap near 0.
- Multi-label datasets (COCO, VOC, synthetic_multilabel): the exclusive / co-occurring split of
  Singh et al. (CVPR 2020, "Don't judge an object by its context"). For each category b, its
  context c is the category that co-occurs with it most often, c = argmax_c P(c | b), counted on
  the training labels when available (else on the evaluated split). The `num_pairs` (default 20)
  categories with the highest P(c | b) form the biased pairs. For each pair, AP of b is computed
  twice over the same negatives (images without b): with the positives where b occurs without c
  ("exclusive") and with those where b and c occur together ("co-occurring"). Reported: the mean
  over pairs of both APs, their gap, and the pairs themselves.
"""
from __future__ import annotations

import torch

from ..engine.multilabel_metrics import average_precision, mean_ap


def biased_pairs(train_targets: torch.Tensor, num_pairs: int = 20) -> list[tuple[int, int, float]]:
    """[(b, c, P(c|b)), ...]: each category's most frequent co-occurring category, the
    `num_pairs` strongest first."""
    t = train_targets.float()
    counts = t.T @ t  # (K, K) co-occurrence counts
    freq = counts.diagonal().clone()
    cond = counts / freq.clamp_min(1)[:, None]  # P(c | b), row b
    cond.fill_diagonal_(-1)
    p, c = cond.max(dim=1)
    order = [int(b) for b in p.argsort(descending=True) if freq[b] > 0 and p[b] > 0]
    return [(b, int(c[b]), float(p[b])) for b in order[:num_pairs]]


def exclusive_cooccur(scores: torch.Tensor, targets: torch.Tensor, pairs) -> dict:
    """Mean AP (in %) of each biased category on its exclusive and co-occurring positives."""
    targets = targets.bool()
    rows, excl, cooc = [], [], []
    for b, c, p in pairs:
        neg = ~targets[:, b]
        res = {"category": b, "context": c, "p_context": round(p, 4)}
        for name, pos, sink in (("exclusive", targets[:, b] & ~targets[:, c], excl),
                                ("cooccur", targets[:, b] & targets[:, c], cooc)):
            sel = pos | neg
            if pos.any() and neg.any():
                ap = 100 * float(average_precision(scores[sel, b:b + 1], pos[sel, None])[0])
                sink.append(ap)
                res[f"{name}_ap"] = ap
            res[f"{name}_n"] = int(pos.sum())
        rows.append(res)
    out = {"pairs": rows,
           "exclusive_map": sum(excl) / len(excl) if excl else float("nan"),
           "cooccur_map": sum(cooc) / len(cooc) if cooc else float("nan")}
    out["cooccur_minus_exclusive"] = out["cooccur_map"] - out["exclusive_map"]
    return out


def split_metric(scores: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> dict:
    """top1 (single-label, %) or mAP (multi-label, %) of one split's scores."""
    if multilabel:
        return {"mAP": mean_ap(scores, targets)}
    return {"top1": 100 * float((scores.argmax(1) == targets).float().mean()) if len(targets) else float("nan")}


def contextual_bias(split_results: dict, multilabel: bool, train_targets=None,
                    num_pairs: int = 20) -> dict:
    """From {split: (scores (N, K), targets)} -> metrics per split, swapped gap, and (multi-label)
    the exclusive / co-occurring split of the first split."""
    out = {"splits": {name: split_metric(s, t, multilabel) for name, (s, t) in split_results.items()}}
    key = "mAP" if multilabel else "top1"
    if "test" in out["splits"] and "test_swapped" in out["splits"]:
        out["metric"] = key
        out["swapped_gap"] = out["splits"]["test"][key] - out["splits"]["test_swapped"][key]
    if multilabel and split_results:
        first = next(iter(split_results))
        scores, targets = split_results[first]
        ref = train_targets if train_targets is not None else targets
        pairs = biased_pairs(torch.as_tensor(ref), num_pairs)
        out["exclusive_cooccur"] = {"split": first,
                                    "pairs_from": "train" if train_targets is not None else first,
                                    **exclusive_cooccur(scores, torch.as_tensor(targets), pairs)}
    return out

"""Multi-label metrics as the multi-label recognition literature reports them (ML-GCN, Q2L, IDA).

`multilabel_metrics(scores, targets)` with scores (N, C) (probabilities, or any monotone score when
`threshold` is adapted) and multi-hot targets (N, C) returns percentages:

- `mAP`: mean over classes of the average precision (torchmetrics, the non-interpolated area
  under the precision-recall steps, as scikit-learn), over the classes with at least one positive.
- `mAP_voc`: the same with the VOC-style interpolated precision (precision made monotone from the
  right before integrating), the definition of the official IDA/Q2L evaluation code (`voc_mAP`);
  it is never below `mAP`. Ties between scores are broken by sample order, as in that code.
- At threshold t (0.5): a label is predicted when its score >= t. Per class c, TP_c (predicted and
  true), P_c (predicted), G_c (true):
  CP = mean_c TP_c / P_c, CR = mean_c TP_c / G_c, CF1 = 2 CP CR / (CP + CR);
  OP = sum TP / sum P, OR = sum TP / sum G, OF1 = 2 OP OR / (OP + OR).
  A class with P_c = 0 (or G_c = 0) counts precision (recall) 0, as ML-GCN's evaluation does.
- `*_top3`: the same with a label predicted only when it is among the image's three highest
  scores *and* its score >= t (ML-GCN's top-k definition).
"""
from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import (
    binary_average_precision,
    binary_precision,
    binary_recall,
    multilabel_average_precision,
)

from ..errors import UserError

KEYS = ("mAP", "mAP_voc", "CP", "CR", "CF1", "OP", "OR", "OF1",
        "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3")


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _prf(pred: torch.Tensor, targets: torch.Tensor, suffix: str = "") -> dict:
    """CP, CR, CF1, OP, OR, OF1 (percent) of boolean predictions (N, C) against targets (N, C).
    CF1 is the harmonic mean of CP and CR (the literature's), not the mean of per-class F1."""
    pred = pred.long()
    values = {}
    # per class (C): the mean of one binary score per column; overall (O): one over all labels
    for prefix, pred_, targets_, kwargs in (("C", pred.T, targets.T, {"multidim_average": "samplewise"}),
                                            ("O", pred, targets, {})):
        p = binary_precision(pred_, targets_, zero_division=0, **kwargs).mean().item()
        r = binary_recall(pred_, targets_, zero_division=0, **kwargs).mean().item()
        values.update({prefix + "P": p, prefix + "R": r, prefix + "F1": _f1(p, r)})
    return {k + suffix: 100 * v for k, v in values.items()}


def _interpolated_ap(scores: torch.Tensor, hits_positive: torch.Tensor) -> torch.Tensor:
    """VOC-style AP per column (torchmetrics has only the non-interpolated one). A stable
    descending sort keeps sample order for equal scores."""
    order = torch.sort(scores.double(), dim=0, descending=True, stable=True).indices  # (N, C)
    hits = torch.gather(hits_positive.double(), 0, order)  # (N, C) true label in ranked order
    ranks = torch.arange(1, hits.shape[0] + 1, dtype=torch.float64)[:, None]
    precision = hits.cumsum(0) / ranks
    envelope = precision.flip(0).cummax(0).values.flip(0)  # max precision at this rank or later
    return (envelope * hits).sum(0) / hits.sum(0)  # recall grows by 1/npos at every hit


def average_precision(scores: torch.Tensor, targets: torch.Tensor,
                      interpolated: bool = False) -> torch.Tensor:
    """Per-class AP (fraction) of scores (N, C) against multi-hot targets (N, C); NaN for classes
    without positives. Non-interpolated (torchmetrics, as scikit-learn), or `interpolated`: the
    VOC-style precision made monotone from the right, as the official IDA/Q2L `voc_mAP`."""
    scores, targets = scores.float(), (targets > 0.5).long()
    has_pos = targets.sum(0) > 0
    ap = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    if not has_pos.any():
        return ap
    s, t = scores[:, has_pos], targets[:, has_pos]  # AP is undefined without positives
    if interpolated:
        ap[has_pos] = _interpolated_ap(s, t)
    elif s.shape[1] == 1:
        ap[has_pos] = binary_average_precision(s[:, 0], t[:, 0]).double()
    else:
        ap[has_pos] = multilabel_average_precision(s, t, num_labels=s.shape[1], average="none").double()
    return ap


def mean_ap(scores: torch.Tensor, targets: torch.Tensor, interpolated: bool = False) -> float:
    """Mean of `average_precision` over the classes with positives, in percent (NaN if none)."""
    ap = average_precision(scores, targets, interpolated)
    ap = ap[~ap.isnan()]
    return 100 * ap.mean().item() if ap.numel() else math.nan


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5,
                       top_k: int = 3) -> dict:
    """mAP, mAP_voc and CP/CR/CF1/OP/OR/OF1 at `threshold` and for the top-`top_k` labels, in
    percent (see the module docstring). scores, targets: (N, C)."""
    scores = torch.as_tensor(scores).detach().float().cpu()
    targets = torch.as_tensor(targets).detach().cpu()
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise UserError(f"multi-label metrics need scores and targets of one shape (N, C), got "
                        f"{tuple(scores.shape)} and {tuple(targets.shape)}: the model's class count "
                        "must equal the dataset's")
    n, c = scores.shape
    if n == 0 or c == 0:
        return {k: math.nan for k in KEYS}
    targets = (targets > 0.5).long()  # multi-hot; smoothed or soft targets count as positive above 1/2
    out = {"mAP": mean_ap(scores, targets), "mAP_voc": mean_ap(scores, targets, interpolated=True)}
    out.update(_prf(scores >= threshold, targets))
    top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(min(top_k, c), dim=1).indices, True)
    out.update(_prf(top & (scores >= threshold), targets, suffix=f"_top{top_k}"))
    return out

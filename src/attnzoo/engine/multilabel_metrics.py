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
from torchmetrics.functional.classification import binary_average_precision, multilabel_average_precision

from ..errors import UserError

KEYS = ("mAP", "mAP_voc", "CP", "CR", "CF1", "OP", "OR", "OF1",
        "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3")


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _prf(pred: torch.Tensor, targets: torch.Tensor, suffix: str = "") -> dict:
    """CP, CR, CF1, OP, OR, OF1 (percent) of boolean predictions (N, C) against targets (N, C)."""
    pred = pred.double()
    tp = (pred * targets).sum(0)
    npred = pred.sum(0)
    ngt = targets.sum(0)
    cp = (tp / npred.clamp(min=1)).mean().item()
    cr = (tp / ngt.clamp(min=1)).mean().item()
    op = tp.sum().item() / max(npred.sum().item(), 1)
    orr = tp.sum().item() / max(ngt.sum().item(), 1)
    values = {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": orr, "OF1": _f1(op, orr)}
    return {k + suffix: 100 * v for k, v in values.items()}


def average_precision_voc(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class VOC-style interpolated AP (fraction), NaN for classes without positives.

    scores, targets: (N, C). Vectorised over classes; a stable descending sort keeps sample order
    for equal scores.
    """
    order = torch.sort(scores.double(), dim=0, descending=True, stable=True).indices  # (N, C)
    hits = torch.gather(targets.double(), 0, order)  # (N, C) true label in ranked order
    tp = hits.cumsum(0)
    ranks = torch.arange(1, hits.shape[0] + 1, dtype=torch.float64)[:, None]
    precision = tp / ranks
    envelope = precision.flip(0).cummax(0).values.flip(0)  # max precision at this rank or later
    npos = hits.sum(0)
    ap = (envelope * hits).sum(0) / npos.clamp(min=1)  # recall grows by 1/npos at every hit
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


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
    has_pos = targets.sum(0) > 0
    if has_pos.any():
        s, t = scores[:, has_pos], targets[:, has_pos]  # AP is undefined without positives
        if s.shape[1] == 1:
            ap = binary_average_precision(s[:, 0], t[:, 0]).reshape(1)
        else:
            ap = multilabel_average_precision(s, t, num_labels=s.shape[1], average="none")
        mAP = 100 * ap.double().mean().item()
        mAP_voc = 100 * average_precision_voc(scores, targets)[has_pos].mean().item()
    else:
        mAP = mAP_voc = math.nan
    out = {"mAP": mAP, "mAP_voc": mAP_voc}
    t = targets.double()
    out.update(_prf(scores >= threshold, t))
    k = min(top_k, c)
    top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)
    out.update(_prf(top & (scores >= threshold), t, suffix=f"_top{top_k}"))
    return out

"""Multi-label metrics: hand-computed cases for mAP, CP/CR/CF1/OP/OR/OF1 and the top-3 variants;
top-1/top-5 of `evaluate` against their definitions."""
import math

import pytest
import torch

from attnzoo.engine.evaluate import evaluate
from attnzoo.engine.multilabel_metrics import KEYS, average_precision, mean_ap, multilabel_metrics
from attnzoo.errors import UserError


def test_perfect_ranking():
    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    scores = targets.float() * 0.9 + 0.05
    m = multilabel_metrics(scores, targets)
    assert set(m) == set(KEYS)
    for key in ("mAP", "mAP_voc", "CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert m[key] == pytest.approx(100.0)


def test_hand_computed_values():
    # class 0: scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg) -> AP = (1/1 + 2/3) / 2
    # class 1: scores 0.6 (neg), 0.4 (pos), 0.3 (neg), 0.2 (neg) -> AP = 1/2
    scores = torch.tensor([[0.9, 0.6], [0.8, 0.4], [0.7, 0.3], [0.1, 0.2]])
    targets = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]])
    m = multilabel_metrics(scores, targets)
    assert m["mAP"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 2)
    # at 0.5: class 0 predicts rows 0,1,2 (TP 2 of 3 predictions, 2 of 2 positives);
    # class 1 predicts row 0 (TP 0 of 1, 0 of 1 positives)
    assert m["CP"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    assert m["CR"] == pytest.approx(100 * (1 + 0) / 2)
    assert m["OP"] == pytest.approx(100 * 2 / 4)
    assert m["OR"] == pytest.approx(100 * 2 / 3)
    cp, cr = m["CP"], m["CR"]
    assert m["CF1"] == pytest.approx(2 * cp * cr / (cp + cr))
    # with two classes the top-3 labels are all labels: same as the thresholded ones
    assert m["OF1_top3"] == pytest.approx(m["OF1"])


def test_top3_keeps_only_the_three_best_labels():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.1]])
    targets = torch.tensor([[0, 0, 0, 1, 0]])
    m = multilabel_metrics(scores, targets)
    assert m["OR"] == pytest.approx(100.0)  # label 3 is above 0.5
    assert m["OR_top3"] == pytest.approx(0.0)  # but not among the top three
    assert m["OP_top3"] == pytest.approx(0.0)


def test_voc_ap_interpolation_and_classes_without_positives():
    scores = torch.tensor([[0.9, 0.5], [0.8, 0.4], [0.7, 0.3]])
    targets = torch.tensor([[0, 0], [1, 0], [1, 0]])
    ap = average_precision(scores, targets, interpolated=True)
    assert ap[0].item() == pytest.approx((2 / 3 + 2 / 3) / 2)  # envelope of precision 1/2, 2/3
    assert math.isnan(ap[1].item())
    m = multilabel_metrics(scores, targets)
    assert m["mAP_voc"] == pytest.approx(100 * 2 / 3)  # class 1 (no positives) left out
    assert m["mAP_voc"] >= m["mAP"]


def test_errors_and_empty():
    with pytest.raises(UserError, match="class count"):
        multilabel_metrics(torch.rand(3, 4), torch.ones(3, 5))
    m = multilabel_metrics(torch.zeros(0, 4), torch.zeros(0, 4))
    assert all(math.isnan(v) for v in m.values())


def reference_prf(pred: torch.Tensor, targets: torch.Tensor) -> dict:
    """CP/CR/CF1/OP/OR/OF1 (percent) written out in float64, as attnzoo computed them by hand."""
    pred, targets = pred.double(), targets.double()
    tp, npred, ngt = (pred * targets).sum(0), pred.sum(0), targets.sum(0)
    cp, cr = (tp / npred.clamp(min=1)).mean().item(), (tp / ngt.clamp(min=1)).mean().item()
    op, orr = tp.sum().item() / max(npred.sum().item(), 1), tp.sum().item() / max(ngt.sum().item(), 1)
    f1 = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0  # noqa: E731
    return {k: 100 * v for k, v in dict(CP=cp, CR=cr, CF1=f1(cp, cr), OP=op, OR=orr, OF1=f1(op, orr)).items()}


@pytest.mark.parametrize("n, c", [(40, 7), (9, 1), (25, 5)])
def test_threshold_and_top3_metrics_equal_their_definition(n, c):
    g = torch.Generator().manual_seed(n)
    scores = torch.round(torch.rand(n, c, generator=g) * 4) / 4  # ties, also at the threshold
    targets = (torch.rand(n, c, generator=g) < 0.4).long()
    targets[:, 0] = 0  # a class without positives, and (below) one never predicted
    scores[:, -1] = 0.25
    m = multilabel_metrics(scores, targets)
    top3 = torch.zeros(n, c, dtype=torch.bool).scatter_(1, scores.topk(min(3, c), dim=1).indices, True)
    expected = {**reference_prf(scores >= 0.5, targets),
                **{k + "_top3": v for k, v in reference_prf(top3 & (scores >= 0.5), targets).items()}}
    assert {k: m[k] for k in expected} == pytest.approx(expected, rel=1e-6, abs=1e-5)  # torchmetrics: float32


def test_average_precision_of_one_class_and_mean_over_classes_with_positives():
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert average_precision(scores, targets)[0].item() == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores, torch.zeros(4, 1)).isnan().all()
    both = mean_ap(torch.cat([scores, scores], 1), torch.cat([targets, torch.zeros(4, 1)], 1))
    assert both == pytest.approx(100 * (1 + 2 / 3) / 2)


@pytest.mark.parametrize("c", [10, 3])
def test_top1_top5_and_loss_equal_their_definition(c):
    g = torch.Generator().manual_seed(c)
    logits, target = torch.randn(37, c, generator=g), torch.randint(0, c, (37,), generator=g)
    logits[:5] = 0.0  # ties: top-1 is the first class (argmax), top-5 torch.topk's choice
    loader = [(logits[i:i + 8], target[i:i + 8]) for i in range(0, 37, 8)]
    m = evaluate(torch.nn.Identity(), loader, torch.device("cpu"), multilabel=False)
    hits = logits.topk(min(5, c), dim=1).indices.eq(target[:, None])
    expected = {"loss": torch.nn.functional.cross_entropy(logits.double(), target).item(),
                "top1": 100 * logits.argmax(1).eq(target).double().mean().item(),
                "top5": 100 * hits.any(1).double().mean().item()}
    assert m == pytest.approx(expected, rel=1e-6)

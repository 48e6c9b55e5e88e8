"""Multi-label metrics: hand-computed cases for mAP, CP/CR/CF1/OP/OR/OF1 and the top-3 variants."""
import math

import pytest
import torch

from attnzoo.engine.multilabel_metrics import KEYS, average_precision_voc, multilabel_metrics
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
    ap = average_precision_voc(scores, targets)
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

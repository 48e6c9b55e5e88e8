"""Contextual bias: test vs test_swapped gap, exclusive / co-occurring split."""
import math

import torch

from attnzoo.analysis.context import biased_pairs, contextual_bias, exclusive_cooccur


def test_swapped_gap_single_label():
    logits = torch.eye(3)[[0, 1, 2, 0]]
    out = contextual_bias({"test": (logits, torch.tensor([0, 1, 2, 0])),
                           "test_swapped": (logits, torch.tensor([0, 1, 0, 1]))}, multilabel=False)
    assert out["splits"]["test"]["top1"] == 100 and out["splits"]["test_swapped"]["top1"] == 50
    assert out["swapped_gap"] == 50 and out["metric"] == "top1"


def test_biased_pairs_and_exclusive_cooccur():
    # class 0 almost always with class 1; class 2 alone
    train = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float)
    pairs = biased_pairs(train, num_pairs=1)
    assert pairs[0][:2] == (0, 1) and math.isclose(pairs[0][2], 2 / 3, rel_tol=1e-6)
    targets = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float)
    # the network finds class 0 only with its context: high score when 1 is present
    scores = torch.tensor([[0.9, 0.9, 0], [0.1, 0, 0], [0.5, 0.9, 0], [0.2, 0, 0.9]])
    out = exclusive_cooccur(scores, targets, pairs)
    assert out["cooccur_map"] == 100 and out["exclusive_map"] < 50
    assert out["pairs"][0]["exclusive_n"] == 1 and out["pairs"][0]["cooccur_n"] == 1
    full = contextual_bias({"test": (scores, targets)}, multilabel=True, train_targets=train, num_pairs=1)
    assert full["exclusive_cooccur"]["pairs_from"] == "train" and "mAP" in full["splits"]["test"]

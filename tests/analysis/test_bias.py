"""Bias statistics of maps against boxes: energy, pointing, IoU, position/range bias."""
import torch

from attnzoo.analysis.bias import map_box_stats, summarize
from attnzoo.analysis.boxes import box_masks


def _maps():
    m = torch.zeros(4, 8, 8)
    m[0, 0:2, 0:2] = 1.0  # entirely outside the box
    m[1, 3:5, 3:5] = 1.0  # entirely inside
    m[2, 3:5, 4:8] = 1.0  # half inside, half outside
    return m  # m[3] all zero


def test_categories_energy_iou_and_pointing():
    masks = box_masks([torch.tensor([[2.0, 2.0, 6.0, 6.0]])] * 4, 8, 8)
    assert masks[0].sum() == 16 and masks[0, 2, 2] and not masks[0, 6, 6]
    s = map_box_stats(_maps(), masks, thresholds=(0.5,), eps=0.05)
    assert s["category"][:, 0].tolist() == [0, 2, 1, 3]  # position, contained, range, empty
    assert torch.allclose(s["energy"], torch.tensor([0.0, 1.0, 0.5, 0.0]))
    assert torch.allclose(s["inside"][:, 0], torch.tensor([0.0, 1.0, 0.5, 0.0]))
    # IoU: sample 1: 4 / 16; sample 2: inter 4, union 16 + 8 - 4
    assert torch.allclose(s["iou"][:, 0], torch.tensor([0.0, 4 / 16, 4 / 20, 0.0]))
    assert s["pointing"].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_thresholds_change_the_attended_region():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0] = 1.0  # peak inside the box
    m[0, 3, 3] = 0.4  # a weaker blob outside
    masks = box_masks([torch.tensor([[0.0, 0.0, 2.0, 2.0]])], 4, 4)
    s = map_box_stats(m, masks, thresholds=(0.3, 0.5))
    assert s["category"][0].tolist() == [1, 2]  # range-biased at 0.3, contained at 0.5
    assert torch.allclose(s["energy"], torch.tensor([1 / 1.4]))


def test_summary_splits_correct_and_wrong():
    masks = box_masks([torch.tensor([[2.0, 2.0, 6.0, 6.0]])] * 4, 8, 8)
    s = map_box_stats(_maps(), masks, thresholds=(0.25, 0.5))
    out = summarize(s, torch.tensor([True, True, False, False]), thresholds=(0.25, 0.5), at=0.5)
    assert out["all"]["n"] == 4 and out["correct"]["n"] == 2 and out["wrong"]["n"] == 2
    assert out["correct"]["position_bias_rate@0.5"] == 0.5
    assert out["correct"]["contained_rate@0.5"] == 0.5
    assert out["wrong"]["range_bias_rate@0.5"] == 0.5 and out["wrong"]["empty_rate@0.5"] == 0.5
    assert out["all"]["energy_in_box"] == 0.375
    assert len(out["all"]["iou"]) == 2
    empty = summarize(s, torch.ones(4, dtype=torch.bool), thresholds=(0.25, 0.5))
    assert empty["wrong"] == {"n": 0}

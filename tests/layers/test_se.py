"""SE in the LSAS seed's layout."""
import pytest
import torch

from attnzoo.errors import UserError
from attnzoo.layers.se import SE


def test_se_matches_the_formula_and_keeps_shape():
    torch.manual_seed(0)
    se = SE(32)
    assert se.fc1.out_features == 2 and se.fc2.in_features == 2   # round(32 / 16)
    x = torch.randn(2, 32, 5, 4)
    z = se.fc2(torch.relu(se.fc1(x.mean((2, 3)))))
    expected = x * torch.sigmoid(z)[:, :, None, None]
    assert torch.allclose(se(x), expected, atol=1e-6)
    assert se.logit(x).shape == (2, 32, 1, 1)


def test_se_rounding_modes_and_explicit_width():
    assert SE(40, rounding="round").fc1.out_features == 2   # round(2.5) -> 2 (banker's, as Python)
    assert SE(56, rounding="round").fc1.out_features == 4   # round(3.5) -> 4
    assert SE(56, rounding="floor").fc1.out_features == 3   # 56 // 16
    assert SE(64, rd_channels=7).fc1.out_features == 7


def test_se_zero_hidden_channels_is_a_user_error():
    with pytest.raises(UserError, match="rd_ratio 0.0625.*0 hidden.*8 channels"):
        SE(8)
    with pytest.raises(UserError, match="'ceil'.*round, floor"):
        SE(64, rounding="ceil")


def test_rd_ratio_and_rd_divisor():
    assert SE(64, rd_ratio=0.25).fc1.out_features == 16
    assert SE(100, rd_ratio=0.25, rd_divisor=8).fc1.out_features == 24   # round(25 / 8) * 8
    assert SE(100, rd_ratio=0.25, rd_divisor=8, rounding="floor").fc1.out_features == 24
    assert SE(120, rd_ratio=0.25, rd_divisor=8).fc1.out_features == 32   # round(3.75) * 8
    with pytest.raises(UserError, match="rd_divisor.*>= 1"):
        SE(64, rd_divisor=0)


@pytest.mark.parametrize("rounding", ["round", "floor"])
def test_old_reduction_name_warns_and_keeps_the_width_of_c_over_reduction(rounding):
    for channels, reduction in ((64, 16), (56, 16), (40, 16), (48, 3), (49, 49), (30, 4)):
        with pytest.warns(FutureWarning, match=f"reduction={reduction}.*rd_ratio=1/{reduction}"):
            se = SE(channels, reduction=reduction, rounding=rounding)
        expected = round(channels / reduction) if rounding == "round" else channels // reduction
        assert se.fc1.out_features == expected   # exact even where channels * (1/reduction) is not

"""Shift-and-Balance attention and the SB seed's BatchNorm SE."""
import pytest
import torch

from attnzoo.errors import UserError
from attnzoo.layers.shift_balance import ACTIVATIONS, BNSqueezeExcite, ShiftBalance


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_sb_is_x_plus_lambda_times_attention(activation):
    torch.manual_seed(0)
    sb = ShiftBalance(16, rd_ratio=0.5, activation=activation).train()
    assert sb.fc1.out_features == 8 and sb.lam.shape == (1, 16)
    x = torch.randn(4, 16, 3, 3)
    a = sb.attention(x)
    assert a.shape == (4, 16)
    if activation == "softmax":
        assert torch.allclose(a.sum(1), torch.ones(4), atol=1e-5)
    if activation in ("sigmoid", "relu"):
        assert a.min() >= 0
    assert torch.allclose(sb(x), x + (sb.lam * a)[:, :, None, None], atol=1e-6)


def test_seed_initialisation():
    sb = ShiftBalance(64)
    assert sb.fc1.bias.abs().max() == 0 and sb.bn1.bias.abs().max() == 0
    assert 0.005 < sb.fc1.weight.std() < 0.05 and 0.005 < sb.bn2.weight.std() < 0.05
    assert ShiftBalance(64, init_std=None).bn1.weight.eq(1).all()


def test_batch_size_one_works_in_eval():
    sb = ShiftBalance(16).eval()
    se = BNSqueezeExcite(16).eval()
    x = torch.randn(1, 16, 4, 4)
    assert sb(x).shape == x.shape and se(x).shape == x.shape


def test_bn_se_is_a_sigmoid_scale():
    torch.manual_seed(0)
    se = BNSqueezeExcite(16).train()
    x = torch.randn(3, 16, 2, 2)
    gate = se.attention(x)
    assert gate.min() > 0 and gate.max() < 1
    assert torch.allclose(se(x), x * gate[:, :, None, None])


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="rd_ratio 0.01.*0 hidden.*16 channels"):
        ShiftBalance(16, rd_ratio=0.01)
    with pytest.raises(UserError, match="unknown activation 'gelu'.*valid: .*tanh"):
        ShiftBalance(16, activation="gelu")
    with pytest.raises(UserError, match="rd_ratio must be positive"):
        BNSqueezeExcite(16, rd_ratio=0)


@pytest.mark.parametrize("block", [ShiftBalance, BNSqueezeExcite])
def test_hidden_width_is_the_seeds_int_of_rd_ratio_times_c(block):
    for channels, rd_ratio in ((64, 0.5), (100, 0.57), (48, 1 / 3), (10, 0.25)):
        assert block(channels, rd_ratio=rd_ratio).fc1.out_features == int(rd_ratio * channels)
    assert block(64, rd_channels=5).fc1.out_features == 5
    assert block(100, rd_ratio=0.5, rd_divisor=8).fc1.out_features == 48


@pytest.mark.parametrize("block", [ShiftBalance, BNSqueezeExcite])
def test_old_ratio_name_warns_and_means_the_same(block):
    with pytest.warns(FutureWarning, match="ratio=0.25.*rd_ratio=0.25"):
        old = block(48, ratio=0.25)
    assert old.fc1.out_features == block(48, rd_ratio=0.25).fc1.out_features == 12

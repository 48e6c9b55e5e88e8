"""Shift-and-Balance attention and the SB seed's BatchNorm SE."""
import pytest
import torch

from attnzoo.errors import UserError
from attnzoo.layers.shift_balance import ACTIVATIONS, BNSqueezeExcite, ShiftBalance


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_sb_is_x_plus_lambda_times_attention(activation):
    torch.manual_seed(0)
    sb = ShiftBalance(16, ratio=0.5, activation=activation).train()
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
    with pytest.raises(UserError, match="ratio 0.01 leaves 0 hidden channels for 16 channels"):
        ShiftBalance(16, ratio=0.01)
    with pytest.raises(UserError, match="unknown activation 'gelu'.*valid: .*tanh"):
        ShiftBalance(16, activation="gelu")
    with pytest.raises(UserError, match="ratio must be positive"):
        BNSqueezeExcite(16, ratio=0)

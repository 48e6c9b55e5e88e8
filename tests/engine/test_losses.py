"""Loss factory: ce / bce / asl, options, label smoothing and the errors a user can cause."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo.engine.losses import AsymmetricLoss, build_loss
from attnzoo.errors import UserError


def asl_reference(x, y, gamma_pos, gamma_neg, clip, eps):
    """ASL written out elementwise from its definition."""
    p = torch.sigmoid(x)
    p_neg = (1 - p + clip).clamp(max=1) if clip > 0 else 1 - p
    pos = y * torch.log(p.clamp(min=eps)) * (1 - p) ** gamma_pos
    neg = (1 - y) * torch.log(p_neg.clamp(min=eps)) * (1 - p_neg) ** gamma_neg
    return -(pos + neg)


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 6, generator=g) * 2, (torch.rand(4, 6, generator=g) < 0.3).float()


def test_asl_matches_definition_and_reductions():
    x, y = data()
    ref = asl_reference(x, y, 1.0, 4.0, 0.05, 1e-5)
    loss = build_loss("asl", {"gamma_pos": 1, "gamma_neg": 4, "clip": 0.05})
    assert torch.allclose(loss(x, y), ref.mean(), atol=1e-6)
    total = build_loss("asl", {"reduction": "sum"})(x, y)
    assert torch.allclose(total, ref.sum(), atol=1e-5)
    seed = build_loss("asl", {"gamma_pos": 0, "gamma_neg": 0, "clip": 0, "scale": 1000})
    bce = F.binary_cross_entropy_with_logits(x, y)
    assert torch.allclose(seed(x, y), 1000 * bce, rtol=1e-4)


def test_asl_disable_focal_grad_changes_gradient_not_value():
    x, y = data(1)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    la = AsymmetricLoss(disable_torch_grad_focal_loss=False)(a, y)
    lb = AsymmetricLoss(disable_torch_grad_focal_loss=True)(b, y)
    la.backward()
    lb.backward()
    assert torch.allclose(la, lb)
    assert not torch.allclose(a.grad, b.grad)
    assert torch.is_grad_enabled()


def test_bce_and_ce_and_label_smoothing():
    x, y = data(2)
    assert torch.allclose(build_loss("bce")(x, y), F.binary_cross_entropy_with_logits(x, y))
    smooth = build_loss("bce", {}, label_smoothing=0.2)(x, y)
    assert torch.allclose(smooth, F.binary_cross_entropy_with_logits(x, y * 0.8 + 0.1))
    t = torch.tensor([0, 3, 5, 1])
    ce = build_loss("ce", None, 0.1, multilabel=False)
    assert torch.allclose(ce(x, t), F.cross_entropy(x, t, label_smoothing=0.1))


def test_half_precision_logits_give_float32_loss():
    x, y = data(3)
    assert build_loss("asl")(x.half(), y).dtype == torch.float32


def test_errors():
    with pytest.raises(UserError, match="unknown loss 'als'.*did you mean asl"):
        build_loss("als")
    with pytest.raises(UserError, match="gamma_nag not valid for loss 'asl'; valid: gamma_pos"):
        build_loss("asl", {"gamma_nag": 2})
    with pytest.raises(UserError, match="reduction 'avg' is not valid"):
        build_loss("bce", {"reduction": "avg"})
    with pytest.raises(UserError, match="multi-label: use train.loss=bce or asl"):
        build_loss("ce", multilabel=True)
    with pytest.raises(UserError, match="one label per image"):
        build_loss("asl", multilabel=False)
    with pytest.raises(UserError, match="expected a number"):
        build_loss("asl", {"clip": "x"})
    x, y = data()
    with pytest.raises(UserError, match=r"shape \(4, 6\).*shape \(4, 5\).*class count"):
        build_loss("asl")(x, y[:, :5])
    with pytest.raises(UserError, match="needs one class index per image"):
        build_loss("ce")(x, y)

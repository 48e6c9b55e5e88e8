"""LSAS sub-attention: the vectorised chain equals the sequential definition for every order."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attnzoo.errors import UserError
from attnzoo.layers.lsas import LSAS


def sequential_gate(m: LSAS, x):
    """The paper's chain written out step by step."""
    z = m.logit(x).flatten(1)
    gate, s = torch.sigmoid(z), z
    for i in range(m.order):
        s = s * m.sub_w[i] + m.sub_b[i]
        gate = gate * torch.sigmoid(s)
    return gate[:, :, None, None]


@pytest.mark.parametrize("base", ["se", "eca", "cbam"])
@pytest.mark.parametrize("order", [0, 1, 2, 5])
def test_vectorised_chain_equals_the_sequential_one(base, order):
    torch.manual_seed(order)
    m = LSAS(32, attn=base, order=order)
    if order:
        with torch.no_grad():
            m.sub_w.normal_(0.5, 0.5)
            m.sub_b.normal_()
    x = torch.randn(3, 32, 4, 4)
    assert torch.allclose(m.gate(x), sequential_gate(m, x), atol=1e-6)
    y = m(x)
    assert y.shape == x.shape
    if base != "cbam":   # CBAM applies its spatial gate afterwards
        assert torch.allclose(y, x * sequential_gate(m, x), atol=1e-6)


def test_initial_parameters_and_order_zero_is_plain_se():
    m = LSAS(32, order=3)
    assert m.sub_w.shape == (3, 32) and torch.all(m.sub_w == 0.5) and torch.all(m.sub_b == -0.5)
    m0 = LSAS(32, order=0)
    assert not any(n.startswith("sub_") for n, _ in m0.named_parameters())
    x = torch.randn(2, 32, 3, 3)
    assert torch.allclose(m0(x), m0.base(x))


def test_lsas_on_cbam_gates_the_channels_then_the_space():
    torch.manual_seed(0)
    m = LSAS(32, attn="cbam", order=0).eval()
    x = torch.randn(2, 32, 6, 6)
    assert torch.allclose(m(x), m.base(x), atol=1e-6)   # order 0 == timm's CBAM


class OutputShapes(TorchDispatchMode):
    """Records the shape of every tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


@pytest.mark.parametrize("base", ["se", "eca"])
@pytest.mark.parametrize("order", [0, 5])
def test_no_full_size_tensor_besides_the_output(base, order):
    """The gate is computed at (N, C) size: the only (N, C, H, W) tensor made is x * gate, and the
    only one saved for backward is x itself."""
    m = LSAS(16, attn=base, order=order)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with OutputShapes() as made, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x)
    assert made.shapes.count(tuple(x.shape)) == 1 and y.shape == x.shape
    full = [t for t in saved if t.shape == x.shape]
    assert full and all(t.data_ptr() == x.data_ptr() for t in full)


@pytest.mark.parametrize("order", [-1, 6, 1.5, True])
def test_order_outside_0_to_5_is_a_user_error(order):
    with pytest.raises(UserError, match="LSAS order.*0 to 5"):
        LSAS(32, order=order)


def test_unknown_base_and_non_sigmoid_gate_are_user_errors():
    with pytest.raises(UserError, match="'gc'.*cbam"):
        LSAS(32, attn="gc")
    with pytest.raises(UserError, match="sigmoid.*tanh"):
        LSAS(32, attn="eca", gate_layer="tanh")

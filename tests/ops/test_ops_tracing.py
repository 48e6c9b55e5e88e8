"""The operators are FX leaves (timm's notrace registry) that keep their checks, and TorchScript
calls SAN's back in Python: same results as eager either way."""
import io
import warnings

import pytest
import torch
from timm.layers import get_notrace_functions
from torch import nn

from attnzoo import ops
from attnzoo.errors import UserError
from attnzoo.ops import aggregation, subtraction, subtraction2


class LeafTracer(torch.fx.Tracer):
    """torch.fx with timm's registered leaf functions, as timm's feature extraction traces."""

    def __init__(self):
        super().__init__(autowrap_functions=tuple(get_notrace_functions()))


class Local(nn.Module):
    """Pairwise relation and aggregation, the way SAM uses the operators (module globals)."""

    def forward(self, x):
        rel = subtraction2(x, x.flip(1), 3, 1, 1, 1, "reflect", "torch")        # (N, C, 9, HW)
        pos = subtraction(x[:1], 3, 1, 1, 1, "zero", "reference")               # (1, C, 9, HW)
        w = torch.softmax(rel + pos, dim=2)
        return aggregation(x, w, 3, 1, 1, 1, "reflect", "torch")               # (N, C, H, W)


def test_operators_are_registered_leaves():
    leaves = get_notrace_functions()
    for fn in (ops.aggregation, ops.subtraction, ops.subtraction2, ops.lesa_attention):
        assert fn in leaves


def test_fx_records_one_call_per_operator_and_keeps_its_checks():
    m = Local()
    graph = LeafTracer().trace(m)
    called = [n.target for n in graph.nodes if n.op == "call_function"]
    assert [f for f in called if f in (aggregation, subtraction, subtraction2)] == [subtraction2, subtraction,
                                                                                   aggregation]
    traced = torch.fx.GraphModule(m, graph)
    x = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(traced(x), m(x), rtol=0, atol=0)
    with pytest.raises(UserError, match="reflection padding"):
        traced(torch.randn(2, 4, 1, 6))


def test_torchscript_calls_the_operators_in_python():
    m = Local()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        scripted = torch.jit.script(m)
        x = torch.randn(2, 4, 5, 6, requires_grad=True)
        y = scripted(x)
        torch.testing.assert_close(y, m(x), rtol=0, atol=0)
        y.sum().backward()  # through the operators' own backward
        assert x.grad is not None and torch.isfinite(x.grad).all()
        with pytest.raises(Exception, match="Python"):  # the documented limit: no export of Python calls
            torch.jit.save(scripted, io.BytesIO())

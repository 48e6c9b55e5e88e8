"""SAN operators: semantics of the official kernels, backends agree, gradients, errors, FLOPs."""
import logging
from functools import partial

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import attnzoo.ops as O
from attnzoo.errors import UserError

CASES = [  # kernel, stride, dilation, pad_mode, (H, W)
    (3, 1, 1, "reflect", (5, 6)),
    (3, 2, 1, "zero", (5, 6)),
    (5, 2, 2, "reflect", (7, 7)),
    (7, 1, 1, "zero", (5, 4)),
    (7, 1, 1, "reflect", (8, 7)),
]


def _pad(k, d):
    return (d * (k - 1) + 1) // 2


def _out(n, k, s, d):
    return (n + 2 * _pad(k, d) - (d * (k - 1) + 1)) // s + 1


def _source(i, n, reflect):
    """Index arithmetic of the official kernels: None = zero padding, else the (reflected) index."""
    if 0 <= i < n:
        return i
    if not reflect:
        return None
    i = -i if i < 0 else i
    return 2 * (n - 1) - i if i >= n else i


def _loops_aggregation(x, w, k, s, d, reflect):
    N, C, H, W = x.shape
    Cw, p = w.shape[1], _pad(k, d)
    Ho, Wo = _out(H, k, s, d), _out(W, k, s, d)
    out = torch.zeros(N, C, Ho, Wo, dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for h in range(Ho):
                for v in range(Wo):
                    for kh in range(k):
                        for kw in range(k):
                            hi = _source(-p + h * s + kh * d, H, reflect)
                            wi = _source(-p + v * s + kw * d, W, reflect)
                            if hi is not None and wi is not None:
                                out[n, c, h, v] += w[n, c % Cw, kh * k + kw, h * Wo + v] * x[n, c, hi, wi]
    return out


def _loops_subtraction2(x1, x2, k, s, d, reflect):
    N, C, H, W = x1.shape
    p = _pad(k, d)
    Ho, Wo = _out(H, k, s, d), _out(W, k, s, d)
    out = torch.zeros(N, C, k * k, Ho * Wo, dtype=x1.dtype)
    for n in range(N):
        for c in range(C):
            for h in range(Ho):
                for v in range(Wo):
                    centre = x1[n, c, -p + h * s + (k - 1) // 2 * d, -p + v * s + (k - 1) // 2 * d]
                    for kh in range(k):
                        for kw in range(k):
                            hi = _source(-p + h * s + kh * d, H, reflect)
                            wi = _source(-p + v * s + kw * d, W, reflect)
                            other = 0.0 if hi is None or wi is None else x2[n, c, hi, wi]
                            out[n, c, kh * k + kw, h * Wo + v] = centre - other
    return out


@pytest.mark.parametrize("k,s,d,mode", [(3, 2, 1, "reflect"), (3, 1, 2, "zero"), (5, 2, 1, "reflect")])
def test_reference_matches_official_kernel_indexing(k, s, d, mode):
    torch.manual_seed(0)
    x, x2 = torch.randn(1, 4, 5, 6, dtype=torch.float64), torch.randn(1, 4, 5, 6, dtype=torch.float64)
    w = torch.randn(1, 2, k * k, _out(5, k, s, d) * _out(6, k, s, d), dtype=torch.float64)
    reflect, p = mode == "reflect", _pad(k, d)
    got = O.aggregation(x, w, k, s, p, d, mode, backend="reference")
    torch.testing.assert_close(got, _loops_aggregation(x, w, k, s, d, reflect))
    got = O.subtraction2(x, x2, k, s, p, d, mode, backend="reference")
    torch.testing.assert_close(got, _loops_subtraction2(x, x2, k, s, d, reflect))
    torch.testing.assert_close(O.subtraction(x, k, s, p, d, mode, backend="reference"),
                               _loops_subtraction2(x, x, k, s, d, reflect))


def _inputs(k, s, d, hw, dtype=torch.float64, share=2, C=4, N=2):
    torch.manual_seed(1)
    H, W = hw
    L = _out(H, k, s, d) * _out(W, k, s, d)
    x = torch.randn(N, C, H, W, dtype=dtype, requires_grad=True)
    x2 = torch.randn(N, C, H, W, dtype=dtype, requires_grad=True)
    w = torch.randn(N, C // share, k * k, L, dtype=dtype, requires_grad=True)
    return x, x2, w


def _grads(y, inputs):
    return torch.autograd.grad((y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum(), inputs)


@pytest.mark.parametrize("k,s,d,mode,hw", CASES)
def test_torch_backend_matches_reference(k, s, d, mode, hw):
    x, x2, w = _inputs(k, s, d, hw)
    args = (k, s, _pad(k, d), d, mode)
    ref, new = O.aggregation(x, w, *args, backend="reference"), O.aggregation(x, w, *args, backend="torch")
    torch.testing.assert_close(new, ref)
    for a, b in zip(_grads(new, (x, w)), _grads(ref, (x, w)), strict=True):
        torch.testing.assert_close(a, b)
    ref, new = O.subtraction2(x, x2, *args, backend="reference"), O.subtraction2(x, x2, *args, backend="torch")
    torch.testing.assert_close(new, ref)
    for a, b in zip(_grads(new, (x, x2)), _grads(ref, (x, x2)), strict=True):
        torch.testing.assert_close(a, b)
    ref, new = O.subtraction(x, *args, backend="reference"), O.subtraction(x, *args, backend="torch")
    torch.testing.assert_close(new, ref)
    torch.testing.assert_close(_grads(new, (x,))[0], _grads(ref, (x,))[0])


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_gradcheck_float64(backend, mode):
    x, x2, w = _inputs(3, 2, 1, (4, 5), C=2, N=1)
    kw = dict(kernel_size=3, stride=2, padding=1, dilation=1, pad_mode=mode, backend=backend)
    assert torch.autograd.gradcheck(partial(O.aggregation, **kw), (x, w))
    assert torch.autograd.gradcheck(partial(O.subtraction2, **kw), (x, x2))
    assert torch.autograd.gradcheck(partial(O.subtraction, **kw), (x,))


def test_float32_and_official_pad_mode_integers():
    x, x2, w = _inputs(3, 1, 1, (5, 5), dtype=torch.float32)
    a = O.aggregation(x, w, 3, 1, 1, 1, 1, backend="torch")          # 1 = reflect, as in the official API
    torch.testing.assert_close(a, O.aggregation(x, w, 3, 1, 1, 1, "reflect", backend="reference"))
    b = O.subtraction2(x, x2, 3, 1, 1, 1, 0, backend="torch")        # 0 = zero
    torch.testing.assert_close(b, O.subtraction2(x, x2, 3, 1, 1, 1, "zero", backend="reference"))


def test_auto_uses_torch_on_cpu_and_says_so_once(caplog):
    x, _, w = _inputs(3, 1, 1, (4, 4))
    assert O.resolve_backend("auto", x) == "torch"
    O._said.clear()
    with caplog.at_level(logging.INFO, logger="attnzoo.ops"):
        O.aggregation(x, w, 3, 1, 1)
        O.aggregation(x, w, 3, 1, 1)
    assert sum("'torch' backend" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("call,match", [
    (lambda x, w: O.aggregation(x, w[:, :, :4], 3, 1, 1), r"expected \(2, C/share .*9, 16\)"),
    (lambda x, w: O.aggregation(x, w, 5, 1, 2), r"expected \(2, .*25, 16\)"),
    (lambda x, w: O.aggregation(x, w, 3, 2, 1), r"expected \(2, .*9, 4\)"),
    (lambda x, w: O.aggregation(x[:, :3], w, 3, 1, 1), r"share dividing 3"),
    (lambda x, w: O.aggregation(x[0], w, 3, 1, 1), r"4-D tensor"),
    (lambda x, w: O.aggregation(x, w, 3, 1, 1, backend="cuda"), r"valid: auto, reference, torch, triton"),
    (lambda x, w: O.aggregation(x, w, 3, 1, 1, pad_mode="mirror"), r"valid: reflect, zero"),
    (lambda x, w: O.aggregation(x, w, 0, 1, 1), r"kernel_size, stride and dilation must be >= 1"),
    (lambda x, w: O.aggregation(x, w, 3, 1, 4), r"reflection padding .* needs padding < input size"),
    (lambda x, w: O.aggregation(x, w, (3, 3, 3), 1, 1), r"int or a pair of ints"),
    (lambda x, w: O.subtraction2(x, x[:, :, :3], 3, 1, 1), r"same shape"),
    (lambda x, w: O.subtraction(x, 3, 1, 2), r"centre tap falls outside"),
    (lambda x, w: O.aggregation(x, w.float(), 3, 1, 1), r"share dtype and device"),
])
def test_bad_input_is_one_clear_user_error(call, match):
    x, _, w = _inputs(3, 1, 1, (4, 4))
    with pytest.raises(UserError, match=match):
        call(x, w)


def test_triton_refuses_cpu_tensors(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(O, "triton_available", lambda: True)
    x, _, w = _inputs(3, 1, 1, (4, 4))
    with pytest.raises(UserError, match="backend 'triton' needs CUDA tensors, got a tensor on cpu"):
        O.aggregation(x, w, 3, 1, 1, backend="triton")


def test_flop_counter_counts_the_custom_operators():
    x, x2, w = _inputs(3, 1, 1, (4, 4))
    n_out = 2 * 4 * 9 * 16                                              # N * C * k*k * Ho*Wo
    with FlopCounterMode(display=False) as counter:
        O.aggregation(x, w, 3, 1, 1, backend="torch")
    assert counter.get_total_flops() == 2 * n_out                      # one multiply-add per tap
    with FlopCounterMode(display=False) as counter:
        O.subtraction2(x, x2, 3, 1, 1, backend="torch").sum().backward()
    assert counter.get_total_flops() == 2 * n_out + 2 * n_out          # forward + backward


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_channels_last_inputs_give_the_nchw_results(backend):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    x2 = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    w = torch.randn(2, 2, 9, 30, dtype=torch.float64)
    cl = [t.to(memory_format=torch.channels_last) for t in (x, x2, w)]
    for inputs in ((x, x2, w), cl):
        for t in inputs:
            t.requires_grad_()
    outs, grads = [], []
    for a, a2, ww in ((x, x2, w), cl):
        y = O.aggregation(a, ww, 3, 1, 1, backend=backend)
        z = O.subtraction2(a, a2, 3, 1, 1, backend=backend)
        outs.append((y, z))
        grads.append(torch.autograd.grad((y.sin().sum() + z.cos().sum()), (a, a2, ww)))
    for a, b in zip(outs[0] + grads[0], outs[1] + grads[1], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_autocast_runs_the_operators_in_its_dtype(backend):
    """float32 weights beside bf16 values (CUDA autocast's softmax): cast down under autocast, with
    float32 sums; outside autocast the mismatch stays an error."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 8, 5, 6).bfloat16(), torch.randn(2, 2, 9, 30)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = O.aggregation(x, w, 3, 1, 1, backend=backend)
        z = O.subtraction2(x, x.float(), 3, 1, 1, backend=backend)
    assert y.dtype == z.dtype == torch.bfloat16
    ref = O.aggregation(x.double(), w.bfloat16().double(), 3, 1, 1, backend="reference")
    assert (y.double() - ref).norm() <= 1e-2 * ref.norm()
    with pytest.raises(UserError, match="must share dtype"):
        O.aggregation(x, w, 3, 1, 1, backend=backend)

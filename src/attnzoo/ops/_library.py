"""The `torch` and `triton` backends as PyTorch custom operators (`torch.ops.attnzoo.*`).

Being real operators gives them (1) their own backward (registered with `register_autograd`,
which runs our backward functions instead of differentiating the loops), and (2) FLOP formulas,
so `torch.utils.flop_counter.FlopCounterMode` counts them like convolutions:

* aggregation: 2*N*C*k*k*Ho*Wo (one multiply-add per tap and output element); its backward twice
  that (grad input and grad weight);
* subtraction / subtraction2: 2*N*C*k*k*Ho*Wo, i.e. one multiply-add per output element, which is
  how the official counter (`util/complexity.py` of hszhao/SAN) counts it; backward the same.

FlopCounterMode counts 2 FLOPs per multiply-add, so total / 2 is in the multiply-accumulates
(GMac) of the seed's FLOPs column (which counts aggregation as k*k MACs per output element).
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

from . import san_torch
from ._common import Geometry, no_autocast

_BACKENDS = {"torch": san_torch}


def backend_module(name: str):
    if name not in _BACKENDS:
        from . import san_triton  # imported lazily: needs triton

        _BACKENDS["triton"] = san_triton
    return _BACKENDS[name]


def _geometry(shape, kernel_size, stride, padding, dilation, reflect) -> Geometry:
    H, W = shape[-2:]
    out = tuple((n + 2 * p - (d * (k - 1) + 1)) // s + 1
                for n, p, d, k, s in zip((H, W), padding, dilation, kernel_size, stride, strict=True))
    return Geometry(tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), bool(reflect), (H, W), out)


# ---------------------------------------------------------------- aggregation
@torch.library.custom_op("attnzoo::san_aggregation", mutates_args=())
def san_aggregation(x: torch.Tensor, weight: torch.Tensor, kernel_size: list[int], stride: list[int],
                    padding: list[int], dilation: list[int], reflect: bool, backend: str) -> torch.Tensor:
    g = _geometry(x.shape, kernel_size, stride, padding, dilation, reflect)
    with no_autocast(x):
        return backend_module(backend).aggregation_forward(x, weight, g)


@san_aggregation.register_fake
def _(x, weight, kernel_size, stride, padding, dilation, reflect, backend):
    g = _geometry(x.shape, kernel_size, stride, padding, dilation, reflect)
    return x.new_empty(x.shape[0], x.shape[1], *g.out_hw)


@torch.library.custom_op("attnzoo::san_aggregation_backward", mutates_args=())
def san_aggregation_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, kernel_size: list[int],
                             stride: list[int], padding: list[int], dilation: list[int], reflect: bool,
                             backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = _geometry(x.shape, kernel_size, stride, padding, dilation, reflect)
    with no_autocast(x):
        return backend_module(backend).aggregation_backward(grad, x, weight, g)


@san_aggregation_backward.register_fake
def _(grad, x, weight, kernel_size, stride, padding, dilation, reflect, backend):
    return torch.empty_like(x), torch.empty_like(weight)


def _agg_setup(ctx, inputs, output):
    x, weight, *params = inputs
    ctx.save_for_backward(x, weight)
    ctx.params = params


def _agg_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x, grad_w = san_aggregation_backward(grad, x, weight, *ctx.params)
    return grad_x, grad_w, None, None, None, None, None, None


san_aggregation.register_autograd(_agg_backward, setup_context=_agg_setup)


# ---------------------------------------------------------------- subtraction2
@torch.library.custom_op("attnzoo::san_subtraction2", mutates_args=())
def san_subtraction2(x1: torch.Tensor, x2: torch.Tensor, kernel_size: list[int], stride: list[int],
                     padding: list[int], dilation: list[int], reflect: bool, backend: str) -> torch.Tensor:
    g = _geometry(x1.shape, kernel_size, stride, padding, dilation, reflect)
    with no_autocast(x1):
        return backend_module(backend).subtraction2_forward(x1, x2, g)


@san_subtraction2.register_fake
def _(x1, x2, kernel_size, stride, padding, dilation, reflect, backend):
    g = _geometry(x1.shape, kernel_size, stride, padding, dilation, reflect)
    return x1.new_empty(x1.shape[0], x1.shape[1], g.taps, g.out_hw[0] * g.out_hw[1])


@torch.library.custom_op("attnzoo::san_subtraction2_backward", mutates_args=())
def san_subtraction2_backward(grad: torch.Tensor, x1: torch.Tensor, kernel_size: list[int], stride: list[int],
                              padding: list[int], dilation: list[int], reflect: bool,
                              backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = _geometry(x1.shape, kernel_size, stride, padding, dilation, reflect)
    with no_autocast(x1):
        return backend_module(backend).subtraction2_backward(grad, x1, g)


@san_subtraction2_backward.register_fake
def _(grad, x1, kernel_size, stride, padding, dilation, reflect, backend):
    return torch.empty_like(x1), torch.empty_like(x1)


def _sub_setup(ctx, inputs, output):
    x1, _x2, *params = inputs
    ctx.save_for_backward(x1)
    ctx.params = params


def _sub_backward(ctx, grad):
    (x1,) = ctx.saved_tensors
    grad_x1, grad_x2 = san_subtraction2_backward(grad, x1, *ctx.params)
    return grad_x1, grad_x2, None, None, None, None, None, None


san_subtraction2.register_autograd(_sub_backward, setup_context=_sub_setup)


# ---------------------------------------------------------------- FLOP formulas
@register_flop_formula(torch.ops.attnzoo.san_aggregation)
def _agg_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(out_shape) * w_shape[2]


@register_flop_formula(torch.ops.attnzoo.san_aggregation_backward)
def _agg_bwd_flops(grad_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return 4 * math.prod(grad_shape) * w_shape[2]


@register_flop_formula(torch.ops.attnzoo.san_subtraction2)
def _sub_flops(x1_shape, x2_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(out_shape)


@register_flop_formula(torch.ops.attnzoo.san_subtraction2_backward)
def _sub_bwd_flops(grad_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(grad_shape)

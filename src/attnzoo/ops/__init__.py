"""Low-level operators with their own autograd: SAN's local self-attention operators (below) and
LESA's attention (`lesa_attention`, see `attnzoo.ops.lesa`), each behind one function.

    aggregation(x, weight, kernel_size, stride=1, padding=0, dilation=1, pad_mode='reflect', backend='auto')
        x (N, C, H, W), weight (N, C/share, k*k, Ho*Wo) -> (N, C, Ho, Wo);
        out[n, c, p] = sum_t weight[n, c % (C/share), t, p] * x_padded[n, c, tap t of p]
    subtraction2(x1, x2, kernel_size, ...) -> (N, C, k*k, Ho*Wo);
        out[n, c, t, p] = x1[n, c, centre of p] - x2_padded[n, c, tap t of p]
    subtraction(x, kernel_size, ...) = subtraction2(x, x, ...)

The semantics are those of the official CUDA kernels (hszhao/SAN, `lib/sa/functions/`): taps in
row-major (kh, kw) order, channel c uses weight channel c % (C/share), pad_mode 'zero' or
'reflect' (the official 0 and 1 are accepted too; 'reflect' is the official default and what the
networks use). Ho = (H + 2*padding - (dilation*(k-1) + 1)) // stride + 1.

Backends: 'reference' (unfold + autograd, the ground truth), 'torch' (memory-lean loop over the
k*k taps with its own backward, any device), 'triton' (Triton kernels, CUDA tensors), 'auto'
(triton for CUDA tensors when Triton is installed, else torch; says once when it falls back).
The torch and triton backends are custom operators `torch.ops.attnzoo.san_*` with FLOP formulas,
so `torch.utils.flop_counter.FlopCounterMode` counts them (see `attnzoo.ops._library`).

The three functions are FX leaves (timm's `register_notrace_function`: their argument checks stay
in place and FX records one call), and TorchScript keeps them as Python calls (`torch.jit.ignore`):
a scripted SAN network runs and gives the eager results, but `torch.jit.save` cannot export it.

Under autocast (CUDA's or the CPU's) the operators run in the autocast dtype, as a convolution
does: floating inputs in another dtype (float64 excepted) are cast to it first. This is what lets a
SAN block mix its float32 softmax (CUDA autocast returns softmax in float32) with its bf16/fp16
values: the attention weights are cast down, not the features up. Every backend accumulates in
float32 (float64 for float64 inputs) and returns the input dtype.

One difference from the official code: for a centre tap that is not at offset 0 (even kernels or
padding other than (d*(k-1)+1)//2), the official subtraction backward disagrees with its own
forward; here the gradient always is that of the forward.
"""
import importlib.util
import logging
import os
from typing import Tuple, Union

import torch
from timm.layers import register_notrace_function

from ..errors import UserError, choices_hint
from . import san_reference
from ._common import PAD_MODES, check_aggregation, check_subtraction2, no_autocast
from ._library import san_aggregation, san_subtraction2
from .lesa import lesa_attention

__all__ = ["aggregation", "subtraction", "subtraction2", "resolve_backend", "BACKENDS", "PAD_MODES",
           "lesa_attention"]

# Argument types TorchScript reads from the signatures of the operators it leaves to Python.
Size = Union[int, Tuple[int, int]]
PadMode = Union[str, int]

BACKENDS = ("auto", "reference", "torch", "triton")
log = logging.getLogger(__name__)
_said: set[str] = set()


def _say_once(key: str, message: str, level=logging.INFO) -> None:
    # not while torch.compile traces: logging would break the graph in every SAN block
    if key not in _said and not torch.compiler.is_compiling():
        _said.add(key)
        log.log(level, message)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The concrete backend ('reference', 'torch' or 'triton') that `backend` means for tensor x."""
    if backend not in BACKENDS:
        raise UserError(f"unknown SAN ops backend {backend!r}; {choices_hint(str(backend), BACKENDS)}")
    if torch.compiler.is_exporting():  # torch.export (ONNX): the unfold form, plain ops an exporter translates
        return "reference"
    if backend == "triton":
        if not triton_available():
            raise UserError("backend 'triton' needs the triton package; use backend='torch' or 'auto'")
        if not x.is_cuda and not _interpreting():
            raise UserError(f"backend 'triton' needs CUDA tensors, got a tensor on {x.device}; "
                            "use backend='torch' or 'auto' (or set TRITON_INTERPRET=1 to run the kernels "
                            "in Triton's slow interpreter)")
        return "triton"
    if backend == "auto":
        if x.is_cuda and triton_available():
            return "triton"
        if x.is_cuda:
            _say_once("no-triton", "attnzoo.ops: triton is not installed; SAN operators fall back to the "
                      "'torch' backend", logging.WARNING)
        else:
            _say_once(f"no-cuda-{x.device.type}", f"attnzoo.ops: tensors on {x.device.type}, not CUDA; "
                      "SAN operators use the 'torch' backend")
        return "torch"
    return backend


def _autocast(*tensors: torch.Tensor):
    """The tensors in the autocast dtype when autocast is on for their device (float64 kept), else as given."""
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return tensors  # the argument checks name what is wrong
    device = tensors[0].device.type
    if device not in ("cuda", "cpu", "xpu") or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t for t in tensors)


@torch.jit.ignore
@register_notrace_function
def aggregation(x: torch.Tensor, weight: torch.Tensor, kernel_size: Size = 3, stride: Size = 1, padding: Size = 0,
                dilation: Size = 1, pad_mode: PadMode = "reflect", backend: str = "auto") -> torch.Tensor:
    """Weighted sum over each output position's k*k neighbourhood, per channel.

    x: (N, C, H, W); weight: (N, C/share, k*k, Ho*Wo) -> (N, C, Ho, Wo).
    """
    x, weight = _autocast(x, weight)
    g = check_aggregation(x, weight, kernel_size, stride, padding, dilation, pad_mode)
    b = resolve_backend(backend, x)
    if b == "reference":
        with no_autocast(x):
            return san_reference.aggregation(x, weight, g)
    return san_aggregation(x, weight, *g.as_lists(), g.reflect, b)


@torch.jit.ignore
@register_notrace_function
def subtraction2(x1: torch.Tensor, x2: torch.Tensor, kernel_size: Size = 3, stride: Size = 1, padding: Size = 0,
                 dilation: Size = 1, pad_mode: PadMode = "reflect", backend: str = "auto") -> torch.Tensor:
    """Centre of x1 minus every tap of the neighbourhood of x2.

    x1, x2: (N, C, H, W) -> (N, C, k*k, Ho*Wo).
    """
    x1, x2 = _autocast(x1, x2)
    g = check_subtraction2(x1, x2, kernel_size, stride, padding, dilation, pad_mode)
    b = resolve_backend(backend, x1)
    if b == "reference":
        with no_autocast(x1):
            return san_reference.subtraction2(x1, x2, g)
    return san_subtraction2(x1, x2, *g.as_lists(), g.reflect, b)


@torch.jit.ignore
@register_notrace_function
def subtraction(x: torch.Tensor, kernel_size: Size = 3, stride: Size = 1, padding: Size = 0, dilation: Size = 1,
                pad_mode: PadMode = "reflect", backend: str = "auto") -> torch.Tensor:
    """Centre minus every tap of the neighbourhood of x: (N, C, H, W) -> (N, C, k*k, Ho*Wo)."""
    (x,) = _autocast(x)
    g = check_subtraction2(x, x, kernel_size, stride, padding, dilation, pad_mode, op="subtraction")
    b = resolve_backend(backend, x)
    if b == "reference":
        with no_autocast(x):
            return san_reference.subtraction2(x, x, g)
    return san_subtraction2(x, x, *g.as_lists(), g.reflect, b)

"""CUDA's autocast policy on the CPU, for tests: ``with cuda_autocast(torch.bfloat16): ...``.

CPU and CUDA autocast cast different op lists. On CUDA, softmax, log_softmax, sum, prod, cumsum,
the vector/matrix norms, layer_norm, group_norm, exp, log, pow and the losses return float32 for
bf16/fp16 inputs; on the CPU softmax and sum stay bf16, while reflection padding (which CUDA leaves
alone) goes to float32. So code that mixes a float32 softmax with bf16 convolutions -- what every
CUDA run does -- is never seen by a plain CPU autocast test.

Inside the context, CPU autocast is on and follows CUDA's lists instead (torch's
`aten/src/ATen/autocast_mode.cpp`, the `AT_FORALL_*` lists registered for `AutocastCUDA`): the
`fp32`, `fp32_set_opt_dtype` and `promote` ops get kernels on the `AutocastCPU` dispatch key that
cast as CUDA's do, CUDA's lower-precision ops that CPU autocast misses are added, and the ops only
CPU autocast runs in float32 fall through. Being dispatcher kernels, they also apply inside
composite ops (cross_entropy -> log_softmax + nll_loss, square -> pow), as on CUDA, and the casts
are recorded by autograd, so backward sees the same graph. BatchNorm is in none of CUDA's lists
(cuDNN takes bf16 input with float32 statistics and returns bf16); neither is mean.

The registrations are process-wide while the context is open: do not open it from several threads.
"""
from __future__ import annotations

import contextlib

import torch
from torch.library import Library, fallthrough_kernel

FP32 = [  # AT_FORALL_FP32: computed in float32
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
    "native_layer_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim",
    "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
    "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d"]
FP32_SET_OPT_DTYPE = [  # float32 unless the call names a dtype
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList"]
PROMOTE = ["addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sampler", "index_put", "tensordot",
           "scatter_add"]  # to the widest floating input type
LOWER_PRECISION = ["addmv", "addr", "mv", "chain_matmul", "linalg_multi_dot"]  # CUDA's, missing from the CPU's
CPU_ONLY_FP32 = [  # float32 under CPU autocast only: left alone, as on CUDA
    "reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d", "max_unpool2d", "max_unpool3d",
    "fractional_max_pool2d", "fractional_max_pool3d", "cross_entropy_loss", "polar", "trace"]

_LOW = (torch.float16, torch.bfloat16)


def _overload(name: str):
    """The aten overload, or None where this torch has no such op."""
    op, _, overload = name.partition(".")
    packet = getattr(torch.ops.aten, op, None)
    if packet is None:
        return None
    return getattr(packet, overload or "default", None)


def _eligible(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64 and t.device.type == "cpu"


def _cast(value, dtype):
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value.to(dtype) if _eligible(value) else value


def _tensors(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _tensors(a)
        elif isinstance(a, torch.Tensor):
            yield a


def _kernel(op, policy: str):
    below = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)
    names = [a.name for a in op._schema.arguments]

    def kernel(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(below):
            if policy == "fp32":
                args, kwargs = _cast(args, torch.float32), {k: _cast(v, torch.float32) for k, v in kwargs.items()}
            elif policy == "fp32_set_opt_dtype":
                i = names.index("dtype")
                given = args[i] if len(args) > i else kwargs.get("dtype")
                if given is None and _eligible(args[0]) and args[0].dtype in _LOW:
                    kwargs = dict(kwargs, dtype=torch.float32)
            elif policy == "promote":
                floats = [t.dtype for t in _tensors([*args, *kwargs.values()]) if _eligible(t)]
                if floats:
                    widest = torch.float32 if torch.float32 in floats else floats[0]
                    args, kwargs = _cast(args, widest), {k: _cast(v, widest) for k, v in kwargs.items()}
            else:  # lower precision
                low = torch.get_autocast_dtype("cpu")
                args, kwargs = _cast(args, low), {k: _cast(v, low) for k, v in kwargs.items()}
            return op(*args, **kwargs)
    return kernel


@contextlib.contextmanager
def cuda_autocast(dtype: torch.dtype = torch.bfloat16):
    """CPU autocast to `dtype` with CUDA's cast policy (see the module docstring)."""
    lib = Library("aten", "IMPL")
    try:
        for policy, names in (("fp32", FP32), ("fp32_set_opt_dtype", FP32_SET_OPT_DTYPE),
                              ("promote", PROMOTE), ("lower", LOWER_PRECISION)):
            for name in names:
                op = _overload(name)
                if op is not None:
                    lib.impl(name, _kernel(op, policy), "AutocastCPU")
        for name in CPU_ONLY_FP32:
            if _overload(name) is not None:
                lib.impl(name, fallthrough_kernel, "AutocastCPU")
        with torch.autocast("cpu", dtype=dtype):
            yield
    finally:
        lib._destroy()

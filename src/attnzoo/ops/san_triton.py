"""`triton` backend: Triton kernels for the SAN operators (forward and backward).

The input is padded once with PyTorch (zero or reflection), so the kernels only index inside the
padded tensor; gradients w.r.t. the padded tensor are folded back by `san_torch.unpad`. Every
kernel gathers (no atomics), so results are deterministic for a given configuration.

* Every tensor is read and written through its strides: channels_last inputs (and weights, and
  incoming gradients) are used as they are, not copied to NCHW first; outputs and gradients take
  the memory format of the input.
* Aggregation: one program handles one (n, weight channel) group -- the C/Cw channels that share
  weight channel cw, SHARE of them at a time as the rows of a 2-D tile -- and BLOCK positions, so
  each weight tap is loaded once for the whole group rather than once per channel.
* Block size and warps are autotuned (`CONFIGS`, per problem size). Under Triton's interpreter
  and when `torch.use_deterministic_algorithms(True)` is on, one configuration (`PINNED`) is used:
  a configuration picked by timing could change the order of the share-reduction of the weight
  gradient from one run to the next.
* Loop bounds are compile-time constants (`tl.constexpr`): Triton 3.6's interpreter cannot take
  `range()` of a runtime argument under NumPy >= 2.4 ("only 0-dimensional arrays can be converted
  to Python scalars"), and constant trip counts let the compiler unroll the k*k taps.

Accumulation is float32 (float64 for float64 inputs). The kernels also run on the CPU under
Triton's interpreter (TRITON_INTERPRET=1), which is how the test suite checks them without a GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._common import Geometry
from .san_reference import pad
from .san_torch import unpad

CONFIGS = [triton.Config({"BLOCK": block}, num_warps=warps)
           for block, warps in ((64, 2), (128, 4), (256, 4), (256, 8), (512, 8))]
PINNED = {"BLOCK": 128, "num_warps": 4}
MAX_SHARE = 16  # rows of a group tile; more channels sharing one weight channel are taken in chunks


@triton.jit
def _agg_fwd(xp_ptr, w_ptr, out_ptr, S, Cw, Wo, L,
             sxn, sxc, sxh, sxw, swn, swc, swk, swl, son, soc, soh, sow, SH, SW, DH, DW,
             K: tl.constexpr, KW: tl.constexpr, SHARE: tl.constexpr, CHUNKS: tl.constexpr,
             ACC: tl.constexpr, BLOCK: tl.constexpr):
    group = tl.program_id(0).to(tl.int64)               # (n, weight channel cw)
    n = group // Cw
    cw = group % Cw
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # output positions
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    w_base = w_ptr + n * swn + cw * swc + offs * swl
    for j in range(CHUNKS):
        s = j * SHARE + tl.arange(0, SHARE)             # channels c = s * Cw + cw share weight cw
        ms = (s < S)[:, None] & m[None, :]
        x_base = xp_ptr + n * sxn + (s * Cw + cw).to(tl.int64)[:, None] * sxc
        acc = tl.zeros([SHARE, BLOCK], dtype=ACC)
        for t in range(K):
            wv = tl.load(w_base + t * swk, mask=m, other=0.0).to(ACC)  # once for the SHARE channels
            pos = (ho * SH + (t // KW) * DH) * sxh + (wo * SW + (t % KW) * DW) * sxw
            xv = tl.load(x_base + pos[None, :], mask=ms, other=0.0)
            acc += xv.to(ACC) * wv[None, :]
        out = out_ptr + n * son + (s * Cw + cw).to(tl.int64)[:, None] * soc + (ho * soh + wo * sow)[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=ms)


@triton.jit
def _tap_source(hp, wp, m, t, Ho, Wo, KW: tl.constexpr, SH, SW, DH, DW):
    """For padded-input positions (hp, wp) and tap t: the output position (ho, wo) that reads them
    through that tap and whether there is one (ok), for the gather backwards."""
    hs = hp - (t // KW) * DH
    ws = wp - (t % KW) * DW
    ho = hs // SH
    wo = ws // SW
    ok = m & (hs >= 0) & (ws >= 0) & (ho * SH == hs) & (wo * SW == ws) & (ho < Ho) & (wo < Wo)
    return ho, wo, ok


@triton.jit
def _agg_bwd_x(go_ptr, w_ptr, gxp_ptr, S, Cw, Hp, Wp, Ho, Wo,
               sgn, sgc, sgh, sgw, swn, swc, swk, swl, sxn, sxc, sxh, sxw, SH, SW, DH, DW,
               K: tl.constexpr, KW: tl.constexpr, SHARE: tl.constexpr, CHUNKS: tl.constexpr,
               ACC: tl.constexpr, BLOCK: tl.constexpr):
    group = tl.program_id(0).to(tl.int64)
    n = group // Cw
    cw = group % Cw
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # padded-input positions
    m = offs < Hp * Wp
    hp = offs // Wp
    wp = offs % Wp
    for j in range(CHUNKS):
        s = j * SHARE + tl.arange(0, SHARE)
        c = (s * Cw + cw).to(tl.int64)[:, None]
        acc = tl.zeros([SHARE, BLOCK], dtype=ACC)
        for t in range(K):
            ho, wo, ok = _tap_source(hp, wp, m, t, Ho, Wo, KW, SH, SW, DH, DW)
            wv = tl.load(w_ptr + n * swn + cw * swc + t * swk + (ho * Wo + wo) * swl, mask=ok, other=0.0)
            g = tl.load(go_ptr + n * sgn + c * sgc + (ho * sgh + wo * sgw)[None, :],
                        mask=(s < S)[:, None] & ok[None, :], other=0.0)
            acc += g.to(ACC) * wv.to(ACC)[None, :]
        tl.store(gxp_ptr + n * sxn + c * sxc + (hp * sxh + wp * sxw)[None, :], acc.to(gxp_ptr.dtype.element_ty),
                 mask=(s < S)[:, None] & m[None, :])


@triton.jit
def _agg_bwd_w(go_ptr, xp_ptr, gw_ptr, S, Cw, Wo, L,
               sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw, swn, swc, swk, swl, SH, SW, DH, DW,
               K: tl.constexpr, KW: tl.constexpr, SHARE: tl.constexpr, CHUNKS: tl.constexpr,
               ACC: tl.constexpr, BLOCK: tl.constexpr):
    group = tl.program_id(0).to(tl.int64)
    n = group // Cw
    cw = group % Cw
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    for t in range(K):
        pos = (ho * SH + (t // KW) * DH) * sxh + (wo * SW + (t % KW) * DW) * sxw
        acc = tl.zeros([BLOCK], dtype=ACC)
        for j in range(CHUNKS):                          # sum over the channels that share weight cw
            s = j * SHARE + tl.arange(0, SHARE)
            c = (s * Cw + cw).to(tl.int64)[:, None]
            ms = (s < S)[:, None] & m[None, :]
            g = tl.load(go_ptr + n * sgn + c * sgc + (ho * sgh + wo * sgw)[None, :], mask=ms, other=0.0)
            xv = tl.load(xp_ptr + n * sxn + c * sxc + pos[None, :], mask=ms, other=0.0)
            acc += tl.sum(g.to(ACC) * xv.to(ACC), axis=0)
        tl.store(gw_ptr + n * swn + cw * swc + t * swk + offs * swl, acc.to(gw_ptr.dtype.element_ty), mask=m)


@triton.jit
def _sub2_fwd(x1_ptr, x2p_ptr, out_ptr, C, Wo, L, s1n, s1c, s1h, s1w, s2n, s2c, s2h, s2w, son, soc, sok, sol,
              SH, SW, DH, DW, CH, CW, K: tl.constexpr, KW: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    n = nc // C
    c = nc % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    centre = tl.load(x1_ptr + n * s1n + c * s1c + (ho * SH + CH) * s1h + (wo * SW + CW) * s1w, mask=m, other=0.0)
    x_base = x2p_ptr + n * s2n + c * s2c
    for t in range(K):
        xv = tl.load(x_base + (ho * SH + (t // KW) * DH) * s2h + (wo * SW + (t % KW) * DW) * s2w, mask=m, other=0.0)
        tl.store(out_ptr + n * son + c * soc + t * sok + offs * sol, centre - xv, mask=m)


@triton.jit
def _sub2_bwd_x1(go_ptr, gx1_ptr, C, Wo, L, sgn, sgc, sgk, sgl, sxn, sxc, sxh, sxw, SH, SW, CH, CW,
                 K: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    n = nc // C
    c = nc % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(K):
        acc += tl.load(go_ptr + n * sgn + c * sgc + t * sgk + offs * sgl, mask=m, other=0.0).to(ACC)
    tl.store(gx1_ptr + n * sxn + c * sxc + (ho * SH + CH) * sxh + (wo * SW + CW) * sxw,
             acc.to(gx1_ptr.dtype.element_ty), mask=m)


@triton.jit
def _sub2_bwd_x2(go_ptr, gxp_ptr, C, Hp, Wp, Ho, Wo, sgn, sgc, sgk, sgl, sxn, sxc, sxh, sxw, SH, SW, DH, DW,
                 K: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    n = nc // C
    c = nc % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < Hp * Wp
    hp = offs // Wp
    wp = offs % Wp
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(K):
        ho, wo, ok = _tap_source(hp, wp, m, t, Ho, Wo, KW, SH, SW, DH, DW)
        acc -= tl.load(go_ptr + n * sgn + c * sgc + t * sgk + (ho * Wo + wo) * sgl, mask=ok, other=0.0).to(ACC)
    tl.store(gxp_ptr + n * sxn + c * sxc + hp * sxh + wp * sxw, acc.to(gxp_ptr.dtype.element_ty), mask=m)


KERNELS = {k.__name__: (k, triton.autotune(CONFIGS, key=key)(k)) for k, key in (
    (_agg_fwd, ["L", "K", "CHUNKS"]), (_agg_bwd_x, ["Hp", "Wp", "K", "CHUNKS"]), (_agg_bwd_w, ["L", "K", "CHUNKS"]),
    (_sub2_fwd, ["L", "K"]), (_sub2_bwd_x1, ["L", "K"]), (_sub2_bwd_x2, ["Hp", "Wp", "K"]))}


def pinned() -> bool:
    """One configuration instead of autotuning: in the interpreter and in deterministic mode."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") or torch.are_deterministic_algorithms_enabled()


def _launch(name: str, programs: int, size: int, *args, **constants) -> None:
    """Run kernel `name` on a (programs, cdiv(size, BLOCK)) grid, autotuned or pinned."""
    plain, tuned = KERNELS[name]
    if pinned():
        plain[(programs, triton.cdiv(size, PINNED["BLOCK"]))](*args, **constants, **PINNED)
    else:
        tuned[lambda meta: (programs, triton.cdiv(size, meta["BLOCK"]))](*args, **constants)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geo_args(g: Geometry):
    (sh, sw), (dh, dw) = g.stride, g.dilation
    return sh, sw, dh, dw


def _taps(g: Geometry):
    return {"K": g.taps, "KW": g.kernel[1]}


def _share(C: int, Cw: int):
    S = C // Cw
    share = min(triton.next_power_of_2(S), MAX_SHARE)
    return S, {"SHARE": share, "CHUNKS": triton.cdiv(S, share)}


def _empty_like_format(x: torch.Tensor, *shape: int) -> torch.Tensor:
    """An uninitialised (N, C, ...) tensor in x's memory format (channels_last stays channels_last)."""
    cl = x.dim() == 4 and len(shape) == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.empty(shape, dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if cl else torch.contiguous_format)


def aggregation_forward(x: torch.Tensor, weight: torch.Tensor, g: Geometry) -> torch.Tensor:
    N, C = x.shape[:2]
    Cw, (Ho, Wo) = weight.shape[1], g.out_hw
    xp = pad(x, g)
    out = _empty_like_format(x, N, C, Ho, Wo)
    S, share = _share(C, Cw)
    L = Ho * Wo
    _launch("_agg_fwd", N * Cw, L, xp, weight, out, S, Cw, Wo, L, *xp.stride(), *weight.stride(), *out.stride(),
            *_geo_args(g), **_taps(g), **share, ACC=_acc(x.dtype))
    return out


def aggregation_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, g: Geometry):
    N, C = x.shape[:2]
    Cw, (Ho, Wo) = weight.shape[1], g.out_hw
    L = Ho * Wo
    xp = pad(x, g)
    Hp, Wp = xp.shape[-2:]
    S, share = _share(C, Cw)
    grad_xp = _empty_like_format(x, N, C, Hp, Wp)
    _launch("_agg_bwd_x", N * Cw, Hp * Wp, grad, weight, grad_xp, S, Cw, Hp, Wp, Ho, Wo, *grad.stride(),
            *weight.stride(), *grad_xp.stride(), *_geo_args(g), **_taps(g), **share, ACC=_acc(x.dtype))
    grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format)
    _launch("_agg_bwd_w", N * Cw, L, grad, xp, grad_w, S, Cw, Wo, L, *grad.stride(), *xp.stride(),
            *grad_w.stride(), *_geo_args(g), **_taps(g), **share, ACC=_acc(x.dtype))
    return unpad(grad_xp, x, g), grad_w


def subtraction2_forward(x1: torch.Tensor, x2: torch.Tensor, g: Geometry) -> torch.Tensor:
    N, C = x1.shape[:2]
    Ho, Wo = g.out_hw
    L = Ho * Wo
    x2p = pad(x2, g)
    out = x1.new_empty(N, C, g.taps, L)
    _launch("_sub2_fwd", N * C, L, x1, x2p, out, C, Wo, L, *x1.stride(), *x2p.stride(), *out.stride(),
            *_geo_args(g), *g.centre, **_taps(g))
    return out


def subtraction2_backward(grad: torch.Tensor, x1: torch.Tensor, g: Geometry):
    N, C, H, W = x1.shape
    Ho, Wo = g.out_hw
    L = Ho * Wo
    sh, sw, _, _ = _geo_args(g)
    grad_x1 = _empty_like_format(x1, N, C, H, W).zero_()
    _launch("_sub2_bwd_x1", N * C, L, grad, grad_x1, C, Wo, L, *grad.stride(), *grad_x1.stride(), sh, sw,
            *g.centre, K=g.taps, ACC=_acc(x1.dtype))
    Hp, Wp = H + 2 * g.padding[0], W + 2 * g.padding[1]
    grad_x2p = _empty_like_format(x1, N, C, Hp, Wp)
    _launch("_sub2_bwd_x2", N * C, Hp * Wp, grad, grad_x2p, C, Hp, Wp, Ho, Wo, *grad.stride(), *grad_x2p.stride(),
            *_geo_args(g), **_taps(g), ACC=_acc(x1.dtype))
    return grad_x1, unpad(grad_x2p, x1, g)

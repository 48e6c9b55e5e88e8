"""`triton` backend: Triton kernels for the SAN operators (forward and backward).

The input is padded once with PyTorch (zero or reflection), so the kernels only index inside the
padded tensor; gradients w.r.t. the padded tensor are folded back by `san_torch.unpad`. Every
kernel gathers (no atomics), so results are deterministic. One program handles one (n, c) plane
and BLOCK output (or padded-input) positions. Accumulation is float32 (float64 for float64 inputs).
The kernels also run on the CPU under Triton's interpreter (TRITON_INTERPRET=1), which is how the
test suite checks them without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import Geometry
from .san_reference import pad
from .san_torch import unpad

BLOCK = 256


@triton.jit
def _agg_fwd(xp_ptr, w_ptr, out_ptr, C, Cw, Hp, Wp, Wo, L, K, KW, SH, SW, DH, DW,
             ACC: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    n = nc // C
    cw = nc % C % Cw
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    x_base = xp_ptr + nc * Hp * Wp
    w_base = w_ptr + (n * Cw + cw) * K * L
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(0, K):
        i = t // KW
        j = t % KW
        xv = tl.load(x_base + (ho * SH + i * DH) * Wp + wo * SW + j * DW, mask=m, other=0.0)
        wv = tl.load(w_base + t * L + offs, mask=m, other=0.0)
        acc += xv.to(ACC) * wv.to(ACC)
    tl.store(out_ptr + nc * L + offs, acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _tap_source(hp, wp, m, t, Ho, Wo, KW, SH, SW, DH, DW):
    """For padded-input positions (hp, wp) and tap t: the output position that reads them through
    that tap (flat index ho * Wo + wo) and whether there is one (ok), for the gather backwards."""
    hs = hp - (t // KW) * DH
    ws = wp - (t % KW) * DW
    ho = hs // SH
    wo = ws // SW
    ok = m & (hs >= 0) & (ws >= 0) & (ho * SH == hs) & (wo * SW == ws) & (ho < Ho) & (wo < Wo)
    return ho * Wo + wo, ok


@triton.jit
def _agg_bwd_x(go_ptr, w_ptr, gxp_ptr, C, Cw, Hp, Wp, Ho, Wo, L, K, KW, SH, SW, DH, DW,
               ACC: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    n = nc // C
    cw = nc % C % Cw
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < Hp * Wp
    hp = offs // Wp
    wp = offs % Wp
    w_base = w_ptr + (n * Cw + cw) * K * L
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(0, K):
        pos, ok = _tap_source(hp, wp, m, t, Ho, Wo, KW, SH, SW, DH, DW)
        g = tl.load(go_ptr + nc * L + pos, mask=ok, other=0.0)
        wv = tl.load(w_base + t * L + pos, mask=ok, other=0.0)
        acc += g.to(ACC) * wv.to(ACC)
    tl.store(gxp_ptr + nc * Hp * Wp + offs, acc.to(gxp_ptr.dtype.element_ty), mask=m)


@triton.jit
def _agg_bwd_w(go_ptr, xp_ptr, gw_ptr, C, Cw, Hp, Wp, Wo, L, K, KW, SH, SW, DH, DW,
               ACC: tl.constexpr, BLOCK: tl.constexpr):
    ncw = tl.program_id(0).to(tl.int64)
    n = ncw // Cw
    cw = ncw % Cw
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    for t in range(0, K):
        pos = (ho * SH + (t // KW) * DH) * Wp + wo * SW + (t % KW) * DW
        acc = tl.zeros([BLOCK], dtype=ACC)
        for c in range(cw, C, Cw):                      # the channels that share this weight
            plane = n * C + c
            g = tl.load(go_ptr + plane * L + offs, mask=m, other=0.0)
            xv = tl.load(xp_ptr + plane * Hp * Wp + pos, mask=m, other=0.0)
            acc += g.to(ACC) * xv.to(ACC)
        tl.store(gw_ptr + (ncw * K + t) * L + offs, acc.to(gw_ptr.dtype.element_ty), mask=m)


@triton.jit
def _sub2_fwd(x1_ptr, x2p_ptr, out_ptr, H, W, Hp, Wp, Wo, L, K, KW, SH, SW, DH, DW, CH, CW,
              BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    centre = tl.load(x1_ptr + nc * H * W + (ho * SH + CH) * W + wo * SW + CW, mask=m, other=0.0)
    x_base = x2p_ptr + nc * Hp * Wp
    for t in range(0, K):
        xv = tl.load(x_base + (ho * SH + (t // KW) * DH) * Wp + wo * SW + (t % KW) * DW, mask=m, other=0.0)
        tl.store(out_ptr + (nc * K + t) * L + offs, centre - xv, mask=m)


@triton.jit
def _sub2_bwd_x1(go_ptr, gx1_ptr, H, W, Wo, L, K, SH, SW, CH, CW, ACC: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    ho = offs // Wo
    wo = offs % Wo
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(0, K):
        acc += tl.load(go_ptr + (nc * K + t) * L + offs, mask=m, other=0.0).to(ACC)
    tl.store(gx1_ptr + nc * H * W + (ho * SH + CH) * W + wo * SW + CW, acc.to(gx1_ptr.dtype.element_ty), mask=m)


@triton.jit
def _sub2_bwd_x2(go_ptr, gxp_ptr, Hp, Wp, Ho, Wo, L, K, KW, SH, SW, DH, DW, ACC: tl.constexpr, BLOCK: tl.constexpr):
    nc = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < Hp * Wp
    hp = offs // Wp
    wp = offs % Wp
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(0, K):
        pos, ok = _tap_source(hp, wp, m, t, Ho, Wo, KW, SH, SW, DH, DW)
        acc -= tl.load(go_ptr + (nc * K + t) * L + pos, mask=ok, other=0.0).to(ACC)
    tl.store(gxp_ptr + nc * Hp * Wp + offs, acc.to(gxp_ptr.dtype.element_ty), mask=m)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geo_args(g: Geometry):
    (_, kw), (sh, sw), (dh, dw) = g.kernel, g.stride, g.dilation
    return g.taps, kw, sh, sw, dh, dw


def aggregation_forward(x: torch.Tensor, weight: torch.Tensor, g: Geometry) -> torch.Tensor:
    N, C = x.shape[:2]
    Cw, (Ho, Wo) = weight.shape[1], g.out_hw
    xp = pad(x, g).contiguous()
    weight = weight.contiguous()
    out = x.new_empty(N, C, Ho, Wo)
    L = Ho * Wo
    _agg_fwd[(N * C, triton.cdiv(L, BLOCK))](xp, weight, out, C, Cw, xp.shape[2], xp.shape[3], Wo, L,
                                             *_geo_args(g), ACC=_acc(x.dtype), BLOCK=BLOCK)
    return out


def aggregation_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, g: Geometry):
    N, C = x.shape[:2]
    Cw, (Ho, Wo) = weight.shape[1], g.out_hw
    L = Ho * Wo
    grad, weight = grad.contiguous(), weight.contiguous()
    xp = pad(x, g).contiguous()
    Hp, Wp = xp.shape[-2:]
    grad_xp = x.new_empty(N, C, Hp, Wp)
    _agg_bwd_x[(N * C, triton.cdiv(Hp * Wp, BLOCK))](grad, weight, grad_xp, C, Cw, Hp, Wp, Ho, Wo, L,
                                                     *_geo_args(g), ACC=_acc(x.dtype), BLOCK=BLOCK)
    grad_w = torch.empty_like(weight)
    _agg_bwd_w[(N * Cw, triton.cdiv(L, BLOCK))](grad, xp, grad_w, C, Cw, Hp, Wp, Wo, L,
                                                *_geo_args(g), ACC=_acc(x.dtype), BLOCK=BLOCK)
    return unpad(grad_xp, x, g), grad_w


def subtraction2_forward(x1: torch.Tensor, x2: torch.Tensor, g: Geometry) -> torch.Tensor:
    N, C, H, W = x1.shape
    Ho, Wo = g.out_hw
    L = Ho * Wo
    x1 = x1.contiguous()
    x2p = pad(x2, g).contiguous()
    out = x1.new_empty(N, C, g.taps, L)
    _sub2_fwd[(N * C, triton.cdiv(L, BLOCK))](x1, x2p, out, H, W, x2p.shape[2], x2p.shape[3], Wo, L,
                                              *_geo_args(g), *g.centre, BLOCK=BLOCK)
    return out


def subtraction2_backward(grad: torch.Tensor, x1: torch.Tensor, g: Geometry):
    N, C, H, W = x1.shape
    Ho, Wo = g.out_hw
    L = Ho * Wo
    K, _, sh, sw, _, _ = _geo_args(g)
    grad = grad.contiguous()
    grad_x1 = x1.new_zeros(N, C, H, W)
    _sub2_bwd_x1[(N * C, triton.cdiv(L, BLOCK))](grad, grad_x1, H, W, Wo, L, K, sh, sw, *g.centre,
                                                 ACC=_acc(x1.dtype), BLOCK=BLOCK)
    Hp, Wp = H + 2 * g.padding[0], W + 2 * g.padding[1]
    grad_x2p = x1.new_empty(N, C, Hp, Wp)
    _sub2_bwd_x2[(N * C, triton.cdiv(Hp * Wp, BLOCK))](grad, grad_x2p, Hp, Wp, Ho, Wo, L, *_geo_args(g),
                                                       ACC=_acc(x1.dtype), BLOCK=BLOCK)
    return grad_x1, unpad(grad_x2p, x1, g)

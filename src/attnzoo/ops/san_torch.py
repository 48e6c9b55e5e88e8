"""`torch` backend: memory-lean SAN operators in plain PyTorch, for any device.

Instead of unfolding the input into an (N, C, k*k, L) tensor, every function loops over the k*k
taps and reads a strided view of the padded input for each tap, so the extra memory is one padded
copy of the input plus one (N, C, Ho, Wo) temporary. Sums over taps accumulate in float32 for
bf16/fp16 inputs (in-place products into a float32 buffer compute in float32) and are cast back at
the end. Forward and backward are written out here; `attnzoo.ops._library` wires them into autograd
as custom operators.
"""
from __future__ import annotations

import torch

from ._common import Geometry, acc_dtype
from .san_reference import pad


def tap_window(g: Geometry, tap: int) -> tuple[slice, slice]:
    """Slices of the padded input read by tap `tap` (row-major over (kh, kw)) for all outputs."""
    i, j = divmod(tap, g.kernel[1])
    (sh, sw), (dh, dw), (Ho, Wo) = g.stride, g.dilation, g.out_hw
    return (slice(i * dh, i * dh + (Ho - 1) * sh + 1, sh), slice(j * dw, j * dw + (Wo - 1) * sw + 1, sw))


def centre_window(g: Geometry) -> tuple[slice, slice]:
    """Slices of the unpadded input at the centre tap of every output position."""
    (ch, cw), (sh, sw), (Ho, Wo) = g.centre, g.stride, g.out_hw
    return (slice(ch, ch + (Ho - 1) * sh + 1, sh), slice(cw, cw + (Wo - 1) * sw + 1, sw))


def unpad(grad_padded: torch.Tensor, x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """Gradient w.r.t. the padded input (N, C, Hp, Wp) -> gradient w.r.t. x (N, C, H, W):
    crop for zero padding; for reflection padding the border rows/columns are added onto the
    rows/columns they mirror."""
    ph, pw = g.padding
    if ph == 0 and pw == 0:
        return grad_padded
    if g.reflect:
        like = grad_padded.new_empty(()).expand(x.shape)  # x's shape in the gradient's dtype, no memory
        return torch.ops.aten.reflection_pad2d_backward(grad_padded, like, [pw, pw, ph, ph])
    H, W = g.in_hw
    return grad_padded[:, :, ph: ph + H, pw: pw + W].contiguous()


def aggregation_forward(x: torch.Tensor, weight: torch.Tensor, g: Geometry) -> torch.Tensor:
    """(N, C, H, W), (N, Cw, K, Ho*Wo) -> (N, C, Ho, Wo)."""
    N, C = x.shape[:2]
    Cw, (Ho, Wo) = weight.shape[1], g.out_hw
    xp = pad(x, g)
    xp = xp.view(N, C // Cw, Cw, *xp.shape[-2:])                 # (N, share, Cw, Hp, Wp)
    w = weight.view(N, 1, Cw, g.taps, Ho, Wo)
    out = x.new_zeros(N, C // Cw, Cw, Ho, Wo, dtype=acc_dtype(x.dtype))
    for t in range(g.taps):
        hs, ws = tap_window(g, t)
        out.addcmul_(xp[..., hs, ws], w[:, :, :, t])              # += x(tap) * w(tap)
    return out.view(N, C, Ho, Wo).to(x.dtype)


def aggregation_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, g: Geometry):
    """grad (N, C, Ho, Wo) -> (grad_x (N, C, H, W), grad_weight (N, Cw, K, Ho*Wo))."""
    N, C = x.shape[:2]
    Cw, (Ho, Wo) = weight.shape[1], g.out_hw
    S = C // Cw
    go = grad.reshape(N, S, Cw, Ho, Wo)                             # a view for NCHW and channels_last
    xp = pad(x, g)
    Hp, Wp = xp.shape[-2:]
    xp = xp.view(N, S, Cw, Hp, Wp)
    w = weight.view(N, 1, Cw, g.taps, Ho, Wo)
    acc = acc_dtype(x.dtype)
    grad_w = weight.new_empty(N, Cw, g.taps, Ho, Wo)
    grad_xp = x.new_zeros(N, S, Cw, Hp, Wp, dtype=acc)
    prod = go.new_empty(go.shape, dtype=acc) if S > 1 else None  # one reused (N, S, Cw, Ho, Wo) buffer
    for t in range(g.taps):
        hs, ws = tap_window(g, t)
        if prod is None:
            torch.mul(go[:, 0], xp[:, 0, :, hs, ws], out=grad_w[:, :, t])
        else:
            prod.copy_(go).mul_(xp[..., hs, ws])
            grad_w[:, :, t] = prod.sum(1)                         # sum over the channels sharing it
        grad_xp[..., hs, ws].addcmul_(go, w[:, :, :, t])
    grad_x = unpad(grad_xp.view(N, C, Hp, Wp), x, g).to(x.dtype)
    return grad_x, grad_w.view(N, Cw, g.taps, Ho * Wo)


def subtraction2_forward(x1: torch.Tensor, x2: torch.Tensor, g: Geometry) -> torch.Tensor:
    """(N, C, H, W) twice -> (N, C, K, Ho*Wo): centre of x1 minus each tap of padded x2."""
    N, C = x1.shape[:2]
    Ho, Wo = g.out_hw
    hc, wc = centre_window(g)
    out = x1[:, :, hc, wc].unsqueeze(2).expand(N, C, g.taps, Ho, Wo).contiguous()
    x2p = pad(x2, g)
    for t in range(g.taps):
        hs, ws = tap_window(g, t)
        out[:, :, t].sub_(x2p[:, :, hs, ws])
    return out.view(N, C, g.taps, Ho * Wo)


def subtraction2_backward(grad: torch.Tensor, x1: torch.Tensor, g: Geometry):
    """grad (N, C, K, Ho*Wo) -> (grad_x1, grad_x2), both (N, C, H, W)."""
    N, C = x1.shape[:2]
    Ho, Wo = g.out_hw
    (H, W), (ph, pw) = g.in_hw, g.padding
    go = grad.reshape(N, C, g.taps, Ho, Wo)
    grad_x1 = x1.new_zeros(N, C, H, W)
    hc, wc = centre_window(g)
    grad_x1[:, :, hc, wc] = go.sum(2)                              # every tap reads the same centre
    grad_x2p = x1.new_zeros(N, C, H + 2 * ph, W + 2 * pw, dtype=acc_dtype(x1.dtype))
    for t in range(g.taps):
        hs, ws = tap_window(g, t)
        grad_x2p[:, :, hs, ws].sub_(go[:, :, t])
    return grad_x1, unpad(grad_x2p, x1, g).to(x1.dtype)

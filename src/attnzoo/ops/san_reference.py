"""`reference` backend: the SAN operators written with `unfold`, differentiated by autograd.

Plain and slow and memory-hungry (it materialises the (N, C, k*k, L) unfolded tensor); it is the
ground truth the other backends are tested against. Inputs are checked by the dispatcher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import Geometry, acc_dtype


def pad(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """Zero- or reflection-pad (N, C, H, W) -> (N, C, H + 2ph, W + 2pw)."""
    ph, pw = g.padding
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw, pw, ph, ph), mode="reflect" if g.reflect else "constant")


def unfold(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, k*k, Ho*Wo): the padded neighbourhood of every output position,
    taps in row-major (kh, kw) order like the official kernels."""
    N, C = x.shape[:2]
    cols = F.unfold(pad(x, g), g.kernel, dilation=g.dilation, padding=0, stride=g.stride)
    return cols.view(N, C, g.taps, -1)


def centre(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 1, Ho*Wo): x at the centre tap of every output position."""
    (ch, cw), (sh, sw), (Ho, Wo) = g.centre, g.stride, g.out_hw
    picked = x[:, :, ch: ch + (Ho - 1) * sh + 1: sh, cw: cw + (Wo - 1) * sw + 1: sw]
    return picked.reshape(x.shape[0], x.shape[1], 1, Ho * Wo)


def aggregation(x: torch.Tensor, weight: torch.Tensor, g: Geometry) -> torch.Tensor:
    N, C = x.shape[:2]
    Cw = weight.shape[1]
    acc = acc_dtype(x.dtype)                                      # float32 sums for bf16/fp16
    cols = unfold(x, g).view(N, C // Cw, Cw, g.taps, -1)        # (N, share, Cw, K, L)
    out = (weight.unsqueeze(1).to(acc) * cols.to(acc)).sum(3)    # (N, share, Cw, L)
    return out.reshape(N, C, *g.out_hw).to(x.dtype)


def subtraction2(x1: torch.Tensor, x2: torch.Tensor, g: Geometry) -> torch.Tensor:
    return centre(x1, g) - unfold(x2, g)                          # (N, C, K, L)

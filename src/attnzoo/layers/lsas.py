"""LSAS: lightweight sub-attention strategy (Zhong et al., ICME 2023) on a sigmoid-gated attention.

A gating attention computes y = x · σ(z) from a logit z (N, C, 1, 1). Sub-attention of order k
multiplies the gate by k further per-channel gates built from a chain of affine maps of z:

    s1 = w1·z + b1,   s(i+1) = w(i+1)·s(i) + b(i+1),
    y  = x · σ(z) · σ(s1) · … · σ(sk),

with per-channel w initialised to 0.5 and b to −0.5 (as in the seed's code). Order 0 is the
plain gate. The seed applies it to SE only; applying it to ECA and to the channel gate of CBAM
(both also σ of a logit; `attnzoo.layers.gates`, with timm's parameter names) is attnzoo's
generalisation, not the paper's.

The chain is not unrolled in Python: s_i = A_i·z + c_i with A_i = w1…wi and
c_i = Σ_{j≤i} b_j·w(j+1)…wi, so all k logits come from one broadcast over a (k, N, C) tensor
whose coefficients are computed from the (k, C) parameters with one `cumprod` (the triangular
masks are fixed when the order is). The only full-size (N, C, H, W) tensor made is the output
x · gate, as in plain SE.

Shapes: x (N, C, H, W) -> (N, C, H, W).
"""
import torch
from torch import nn

from ..errors import UserError, choices_hint
from ._checks import check_channels, check_input
from .gates import CbamGate, EcaGate
from .se import SE

MAX_ORDER = 5

BASES = {"se": SE, "eca": EcaGate, "cbam": CbamGate}  # each has logit(x) -> z (N, C, 1, 1)


def check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= MAX_ORDER:
        raise UserError(f"LSAS order must be an integer from 0 to {MAX_ORDER}, got {order!r}")
    return order


class LSAS(nn.Module):
    """Sub-attention of order `order` on the gate of a sigmoid-gated attention `attn`.

    Args:
        channels: C of the input.
        attn: the base attention: 'se' (the paper's), 'eca' or 'cbam' (`layers.gates`, as timm's;
            on CBAM the sub-attention acts on the channel gate, the spatial gate follows unchanged).
        order: 0 (plain gate) to 5.
        w_init, b_init: initial per-channel w and b of the chain (0.5 and -0.5 in the seed).
        **attn_kwargs: options of the base attention (e.g. rd_ratio for SE and CBAM, kernel_size for
            ECA).

    Parameters: `base.*` (the base attention), `sub_w`, `sub_b` of shape (order, C) (absent at
    order 0): row i holds w(i+1), b(i+1).

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    attention_kind = "channel"  # for attnzoo.analysis: attention_weights gives the full gate

    def __init__(self, channels: int, attn: str = "se", order: int = 1, w_init: float = 0.5,
                 b_init: float = -0.5, **attn_kwargs):
        super().__init__()
        check_channels("LSAS", channels=channels)
        self.channels = channels
        if attn not in BASES:
            raise UserError(f"LSAS: unknown base attention '{attn}'; {choices_hint(attn, BASES)}")
        gate = attn_kwargs.get("gate_layer", "sigmoid")
        if gate not in ("sigmoid", nn.Sigmoid):
            raise UserError(f"LSAS needs a sigmoid gate, got gate_layer={gate!r}")
        self.order = check_order(order)
        self.kind = attn
        self.base = BASES[attn](channels, **attn_kwargs)
        if order:
            self.sub_w = nn.Parameter(torch.full((order, channels), float(w_init)))
            self.sub_b = nn.Parameter(torch.full((order, channels), float(b_init)))
            idx = torch.arange(order)
            # after[j, m]: does w_m enter the product that carries b_j forward (m > j)?
            self.register_buffer("after", idx[None, :] > idx[:, None], persistent=False)
            # reach[j, i]: does b_j contribute to s_i (j <= i)?
            self.register_buffer("reach", idx[:, None] <= idx[None, :], persistent=False)

    # -------------------------------------------------------------------- logits of the bases
    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the base attention's channel logit z, (N, C, 1, 1)."""
        return self.base.logit(x)

    def sub_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, C) -> the chain s1..sk, (k, N, C), without a loop over the order."""
        w, b = self.sub_w, self.sub_b                                 # (k, C)
        a = torch.cumprod(w, 0)                                       # A_i = w1…wi, (k, C)
        # t[j, i] = w(j+1)…wi for j <= i (0 otherwise): cumprod over rows of w masked to m > j
        ones = torch.ones_like(w)
        spread = torch.where(self.after[:, :, None], w[None], ones[None])   # (k, k, C)
        t = torch.cumprod(spread, 1) * self.reach[:, :, None]                 # (k, k, C)
        c = torch.einsum("jc,jic->ic", b, t)                                   # (k, C)
        return a[:, None] * z[None] + c[:, None]                               # (k, N, C)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> σ(z)·σ(s1)…σ(sk), (N, C, 1, 1)."""
        z = self.logit(x)
        g = torch.sigmoid(z)
        if hasattr(self, "sub_w"):                                    # order > 0
            s = self.sub_logits(z.flatten(1))                         # (k, N, C)
            g = g * torch.sigmoid(s).prod(0)[:, :, None, None]
        return g

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the full gate, (N, C)."""
        return self.gate(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input("LSAS", x, self.channels)
        y = x * self.gate(x)
        if hasattr(self.base, "spatial"):                             # CBAM's spatial gate follows
            y = self.base.spatial(y)
        return y

    def extra_repr(self) -> str:
        return f"attn={self.kind}, order={self.order}"

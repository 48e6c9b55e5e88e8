"""IDA's interventional classifier (Interventional Dual Attention, ICLR 2023).

The head turns a backbone feature map into multi-label logits in three steps:

1. Class-specific attention pooling, once per head. The D channels are split into `num_heads`
   groups of d = D / num_heads. Head h has one weight vector w[h, c] per class; the spatial
   attention of class c is softmax over positions of  <w[h, c], x_h(p)> / (|w[h, c]| + beta), and
   the class feature is the attention-weighted sum of x_h. Every head sees a different channel
   group: the "multiple sampling" of the intervention.
2. Attention over the heads. The num_heads class features of one (image, class) pair form a
   sequence of num_heads tokens of width d, mixed by single-head self-attention layers: one layer
   without feed-forward ("light"), or two post-norm layers with a ReLU feed-forward of width
   `ffn_dim`, followed by a D x D output projection ("heavy").
3. The normalised logit: logit[c] = sum_h <z[c, h], w[h, c] / (|w[h, c]| + beta)>, reusing the
   pooling weights as the classifier.

Two behaviours of the official implementation (`yu-gi-oh-leilei/IDA_2023ICLR`,
`models/classifier.py`) differ from the paper's formulas and are available as options:

- `logit_norm`: "per_head" (default, the paper: each head's weights divided by their own norm) or
  "last_head" (official: in step 3 every head is divided by the norm of the *last* head's weights,
  because a loop variable leaks into a list comprehension).
- `token_layout`: "head" (default, the paper: token h is head h's class feature) or
  "interleaved" (official: the (d, num_heads) stack of class features is reinterpreted as
  (num_heads, d) by a `view`, so every token mixes channel slices of all heads).

`InterventionalClassifier(..., logit_norm="last_head", token_layout="interleaved")` gives the
official outputs for the official weights (see `attnzoo.convert.ida`). All heads are computed in
one batched operation; there is no Python loop over heads.

Shapes: input (N, D, H, W) (any H, W; a token map (N, D, 1, L) works the same way) ->
logits (N, num_classes); `forward(x, pre_logits=True)` gives the class features (N, C, D).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ._checks import check_channels, check_input

LOGIT_NORMS = ("per_head", "last_head")
TOKEN_LAYOUTS = ("head", "interleaved")


class HeadAttentionLayer(nn.Module):
    """Single-head self-attention over a short sequence, residual; optionally a post-norm FFN.

    (B, T, d) -> (B, T, d). Without `ffn`: x + attn(x) (no normalisation, as the light IDA head).
    With `ffn`: y = norm1(x + attn(x)); norm2(y + fc2(relu(fc1(y)))).
    """

    def __init__(self, dim: int, ffn: bool = True, ffn_dim: int = 2048):
        super().__init__()
        self.dim = dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = ffn
        if ffn:
            self.norm1 = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, ffn_dim)
            self.fc2 = nn.Linear(ffn_dim, dim)
            self.norm2 = nn.LayerNorm(dim)
        else:  # None, not absent: TorchScript then leaves out the feed-forward branch
            self.norm1 = self.fc1 = self.fc2 = self.norm2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, d); scaled dot-product attention with scale 1/sqrt(d), as one head (B, 1, T, d):
        # torch's ONNX exporter translates only 4-D attention
        a = F.scaled_dot_product_attention(self.q(x)[:, None], self.k(x)[:, None], self.v(x)[:, None])[:, 0]
        x = x + self.proj(a)
        if self.fc1 is not None:
            x = self.norm1(x)
            x = self.norm2(x + self.fc2(F.relu(self.fc1(x))))
        return x


class InterventionalClassifier(nn.Module):
    """IDA head: multi-head class-specific attention pooling + attention over heads + normalised
    logit. See the module docstring for the formulas and the official-behaviour options.

    Args:
        in_features: channels D of the feature map; must be divisible by `num_heads`.
        num_classes: number of labels C.
        num_heads: number of channel groups (heads), 4 in the paper.
        heavy: two attention layers with FFN and an output projection (True) or one light layer.
        beta: the constant added to every weight norm (1/32 in the paper and code).
        ffn_dim: hidden width of the feed-forward of the heavy layers (2048).
        logit_norm: "per_head" (paper) or "last_head" (official code).
        token_layout: "head" (paper) or "interleaved" (official code).

    Parameters: `weight` (num_heads, C, d), the pooling/classifier weights of all heads;
    `layers` (the attention layers); `out_proj` (heavy only).
    Input (N, D, H, W) -> logits (N, C).
    """

    attention_kind = "class_spatial"  # for attnzoo.analysis: see attention_weights

    def __init__(self, in_features: int, num_classes: int, num_heads: int = 4, heavy: bool = True,
                 beta: float = 1.0 / 32, ffn_dim: int = 2048, logit_norm: str = "per_head",
                 token_layout: str = "head"):
        super().__init__()
        check_channels("IDA head", in_features=in_features)
        if num_heads < 1 or in_features % num_heads:
            raise UserError(f"IDA head: num_heads={num_heads} must divide the {in_features} "
                            "feature channels of the backbone")
        if num_classes < 1:
            raise UserError(f"IDA head: num_classes must be at least 1, got {num_classes}")
        if logit_norm not in LOGIT_NORMS:
            raise UserError(f"IDA head: logit_norm '{logit_norm}' is not valid; valid: {', '.join(LOGIT_NORMS)}")
        if token_layout not in TOKEN_LAYOUTS:
            raise UserError(f"IDA head: token_layout '{token_layout}' is not valid; "
                            f"valid: {', '.join(TOKEN_LAYOUTS)}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.head_dim = in_features // num_heads
        self.heavy = heavy
        self.beta = beta
        self.logit_norm = logit_norm
        self.token_layout = token_layout
        self.weight = nn.Parameter(torch.empty(num_heads, num_classes, self.head_dim))
        # Like the official code, the layers are copies of one layer (identical at initialisation).
        layer = HeadAttentionLayer(self.head_dim, ffn=heavy, ffn_dim=ffn_dim)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(2 if heavy else 1))
        self.out_proj = nn.Linear(in_features, in_features) if heavy else None
        self.reset_parameters()

    def reset_parameters(self):
        # The default init of a 1x1 convolution with d input channels: U(-1/sqrt(d), 1/sqrt(d)).
        bound = 1.0 / math.sqrt(self.head_dim)
        nn.init.uniform_(self.weight, -bound, bound)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"num_heads={self.num_heads}, heavy={self.heavy}, beta={self.beta}, "
                f"logit_norm={self.logit_norm}, token_layout={self.token_layout}")

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Class-specific spatial attention of every head: (N, D, H, W) -> (N, heads, C, H, W)."""
        n, _, h, w = x.shape
        return self._pool(x)[1].reshape(n, self.num_heads, self.num_classes, h, w)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """`attention_maps` with the positions flattened: (N, D, H, W) -> (N, heads, C, H*W)."""
        return self.attention_maps(x).flatten(-2)

    def _pool(self, x: torch.Tensor):
        """Class features (N, heads, C, d) and spatial attention (N, heads, C, HW)."""
        x = check_input("IDA head", x, self.in_features)
        n = x.shape[0]
        xh = x.reshape(n, self.num_heads, self.head_dim, -1)  # (N, h, d, HW): channel groups
        norms = torch.linalg.vector_norm(self.weight, dim=2)  # (h, C)
        score = torch.einsum("hcd,nhdp->nhcp", self.weight, xh)  # (N, h, C, HW)
        attn = torch.softmax(score / (norms + self.beta)[None, :, :, None], dim=-1)
        feats = torch.einsum("nhcp,nhdp->nhcd", attn, xh)  # (N, h, C, d)
        return feats, attn

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        n = x.shape[0]
        feats, _ = self._pool(x)  # (N, h, C, d)
        if self.token_layout == "head":
            tokens = feats.permute(0, 2, 1, 3)  # (N, C, h, d): token j = head j
        else:  # official: the (d, h) stack read back as (h, d)
            tokens = feats.permute(0, 2, 3, 1).reshape(n, self.num_classes, self.num_heads, self.head_dim)
        tokens = tokens.reshape(n * self.num_classes, self.num_heads, self.head_dim)  # (N*C, h, d)
        for layer in self.layers:
            tokens = layer(tokens)
        z = tokens.reshape(n, self.num_classes, self.in_features)  # (N, C, D), head-major
        if self.out_proj is not None:
            z = self.out_proj(z)
        if pre_logits:
            return z
        return (z * self.classifier_weight()).sum(-1)  # (N, C)

    def classifier_weight(self) -> torch.Tensor:
        """The normalised weights of step 3 as one (C, D) matrix, heads concatenated."""
        if self.logit_norm == "per_head":
            norms = torch.linalg.vector_norm(self.weight, dim=2, keepdim=True)  # (h, C, 1)
        else:  # official: the last head's norm for every head
            norms = torch.linalg.vector_norm(self.weight[-1], dim=1, keepdim=True)[None]  # (1, C, 1)
        w = self.weight / (norms + self.beta)  # (h, C, d)
        return w.permute(1, 0, 2).reshape(self.num_classes, self.in_features)

"""LESA: locally enhanced self-attention (Yang et al., arXiv 2107.05637).

A LESA block replaces the 3x3 convolution of a ResNet bottleneck. It adds two terms:

* unary: a grouped 3x3 convolution (followed by a 1x1 convolution when grouped) and BatchNorm;
* binary: global multi-head self-attention over all H*W positions with a relative position
  embedding, BatchNorm on the similarity terms and on the outputs;

and fuses them with a dynamic gate: ``out = sigmoid(gate([unary, binary])) * binary + unary``,
followed by average pooling when ``stride > 1``.

Position embeddings (``pe_type``):

* ``classification`` -- one learned table of shape (2qk + v, 2*H*W - 1) indexed by the offset of
  the *flattened* positions (key - query); it gives query, key and value embeddings. The
  similarity is ``BN(q.k) + BN(q.r_q) + BN(k.r_k)`` (one BN channel per head and term) and the
  output ``BN(sum_j p_ij v_j) + BN(sum_j p_ij r_v(i, j))``.
* ``detection_qr`` -- 2-D relative logits (separate height and width tables, shared by the
  heads) added to the query only: similarity ``BN(q.k) + BN(q.r)``, output ``BN(sum_j p_ij v_j)``.

Because the embeddings are indexed by positions, a block is built for one feature-map size
(``fmap_size``) and refuses any other input size with a `UserError`. Loading a state dict
trained at another size resamples the relative tables (attnzoo's own addition, see
`resample_relative_1d` and `resample_relative_flat`); the official code cannot change size.

Three evaluation paths compute the same function (``impl``):

* ``"lean"`` (default) -- with autograd, ``classification`` runs `lesa_flat.FlatAttention`: one
  function from the qkv convolution's output to the aggregated values that saves only that output,
  the tables and per-head statistics (no (HW x HW) tensor); the similarity BatchNorm statistics and
  the BatchNorm parts of the gradient come in closed form from (c x c) Gram matrices, and the
  batch goes through small reused work buffers a few samples at a time (see that module).
  ``detection_qr`` uses `_LeanAttention`, which recomputes the similarity terms in backward.
  Evaluation (no grad, eval mode): the similarity BatchNorm is folded into per-head scales (its
  shifts cancel in the softmax) and the output BatchNorm into the values; ``detection_qr`` then
  runs as one `F.scaled_dot_product_attention` call with the relative logits as additive mask.
  ``classification`` needs the attention weights themselves for its value-embedding term, so it
  uses an explicit softmax there.
* ``"reference"`` -- the straightforward formulation of the official code: materialise every
  (channels x HW x HW) embedding tensor, concatenate the similarity terms, BatchNorm, sum. Kept
  as the baseline of ``benchmarks/lesa_memory.py`` and for the equivalence tests.

Faithfulness notes: parameter and buffer names follow the official ``lib/models/LESA.py`` so that
released checkpoints load after dropping the derived ``flatten_index`` buffers. Deviations, all in
configurations the official code cannot run: the projection convolution of the gate is padded
for kernel sizes above 1 (the official one is not, which breaks the shapes); and with
``with_cp=True`` the recomputation during backward does not update the BatchNorm running
statistics a second time (the official reentrant checkpoint does).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import nn

from ..errors import UserError, choices_hint
from ._checks import check_channels, check_input
from .lesa_flat import FlatAttention, no_autocast, promote, skew, unskew, update_running_stats

PE_TYPES = ("classification", "detection_qr")
IMPLS = ("lean", "reference")


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise UserError(f"fmap_size {size}: give one int or (height, width)")
    return size


def relative_index(length: int, device=None) -> torch.Tensor:
    """(length, length) long tensor with ``[i, j] = i - j + length - 1``."""
    pos = torch.arange(length, device=device)
    return pos[:, None] - pos[None, :] + length - 1


# Tables are stored as the official code does, indexed by query-minus-key offsets (i - j + L - 1);
# flipping a table along its offsets gives key-minus-query order, the order `_skew` reads.
# ----------------------------------------------------------------------------- similarity terms

def _term_qk(q, k, *_):
    """(N, g, c, L) x2 -> (N, g, L, L): q_i . k_j."""
    return q.transpose(-1, -2) @ k


def _term_qr_flat(q, k, rel_q, rel_k):
    """q_i . r_q[i - j]  (classification)."""
    return skew(q.transpose(-1, -2) @ rel_q.flip(-1))


def _term_kr_flat(q, k, rel_q, rel_k):
    """k_j . r_k[j - i]  (classification; the official code transposes the key term)."""
    return skew(k.transpose(-1, -2) @ rel_k.flip(-1)).transpose(-1, -2)


def _term_qr_2d(q, k, rel_h, rel_w, index_h, index_w):
    """q_(x,y) . (r_h[x' - x] + r_w[y' - y])  (detection_qr), (N, g, H*W, H*W)."""
    N, g, c, L = q.shape
    H, W = index_h.shape[0], index_w.shape[0]
    qt = q.transpose(-1, -2).reshape(N, g, H, W, c)
    # index_*[a, b] = a - b + n - 1; key-minus-query offsets are its transpose.
    lw = (qt @ rel_w.t()).gather(-1, index_w.t().expand(N, g, H, W, W))  # [x, y, y'] = q.r_w[y'-y]
    idx_h = index_h.t()[:, None, :].expand(N, g, H, W, H)
    lh = (qt @ rel_h.t()).gather(-1, idx_h)  # [x, y, x'] = q.r_h[x'-x]
    return (lh[..., :, None] + lw[..., None, :]).reshape(N, g, L, L)


def _similarity(term_fns, bn, weight, inputs, stats=None):
    """sum_t scale_t * term_t(*inputs), one term at a time, one BatchNorm channel per (term, head).

    This is sum_t BN_t(term_t) up to a per-head constant: the BatchNorm shifts are left out, since
    they cancel in the softmax that follows. With `stats` None: batch statistics in training
    (running statistics updated as `nn.BatchNorm2d` does) or the running ones in eval; with
    `stats` = (mean, inv_std) given: recomputation with those, nothing updated.
    Returns (S, mean, inv_std), the statistics (terms, g).
    """
    training = stats is None and (bn.training or bn.running_mean is None)
    S, means, inv_stds, variances = None, [], [], []
    for t, fn in enumerate(term_fns):
        with no_autocast(inputs[0]):
            x = fn(*inputs)
        g = x.shape[1]
        sl = slice(t * g, (t + 1) * g)
        if stats is not None:
            mean, inv_std = stats[0][t], stats[1][t]
        elif training:
            n = x.numel() // g  # two passes, contiguous (i, j) reductions first (torch.var_mean is slower)
            mean = x.sum(dim=(2, 3)).sum(0) / n
            var = torch.linalg.vector_norm(x - mean.view(1, g, 1, 1), dim=(2, 3)).square().sum(0) / n
            variances.append(var)
            inv_std = torch.rsqrt(var + bn.eps)
        else:
            mean = bn.running_mean[sl]
            inv_std = torch.rsqrt(bn.running_var[sl] + bn.eps)
        scale = (inv_std * weight[sl] if weight is not None else inv_std).view(1, g, 1, 1)
        if S is None:  # the first term (q.k) is a fresh product: scale it in place
            S = x.mul_(scale) if x._base is None and x.is_contiguous() else x.mul(scale)
        else:
            S.addcmul_(x, scale)
        del x
        means.append(mean)
        inv_stds.append(inv_std)
    if training:
        update_running_stats(bn, torch.stack(means), torch.stack(variances), n)
    return S, torch.stack(means), torch.stack(inv_stds)


def _autograd_grads(term_fns, dS, inputs, need, mean, inv_std, weight, training):
    """Gradients of sum_t BN_t(term_t) for any terms (here: detection_qr): each term is recomputed
    under autograd and its BatchNorm gradient applied by hand. Returns (input grads, dweight, dbias)."""
    g = dS.shape[1]
    n = dS.numel() // g
    dS_sum = dS.sum(dim=(0, 2, 3))
    leaves = [x.detach().requires_grad_(r) for x, r in zip(inputs, need)]
    wanted = [x for x, r in zip(leaves, need) if r]
    grads, dweight = [None] * len(wanted), []
    for t, fn in enumerate(term_fns):
        with torch.enable_grad(), no_autocast(dS):
            x = fn(*leaves)
        w = weight[t * g:(t + 1) * g] if weight is not None else 1
        coef = (w * inv_std[t]).view(1, g, 1, 1)
        xhat = (x.detach() - mean[t].view(1, g, 1, 1)) * inv_std[t].view(1, g, 1, 1)
        dot = torch.linalg.vecdot(dS.flatten(2), xhat.flatten(2)).sum(0)
        dweight.append(dot)
        if training:  # BatchNorm with batch statistics: remove the mean and the projection on xhat
            dx = (dS - (dS_sum / n).view(1, g, 1, 1) - xhat * (dot / n).view(1, g, 1, 1)) * coef
        else:
            dx = dS * coef
        if wanted and x.requires_grad:
            gs = torch.autograd.grad(x, wanted, dx, allow_unused=True)
            grads = [a if b is None else (b if a is None else a + b) for a, b in zip(grads, gs)]
        del x, xhat, dx
    it = iter(grads)
    return [next(it) if r else None for r in need], torch.cat(dweight), dS_sum.repeat(len(term_fns))


class _LeanAttention(torch.autograd.Function):
    """Normalised similarity, softmax and aggregation in one function that saves no (HW x HW)
    tensor, for any similarity terms without a value table (here: detection_qr; classification has
    its own, faster `lesa_flat.FlatAttention`).

    Forward: S = sum_t BN_t(term_t) (see `_similarity`), P = softmax(S), returns sv = v P^T,
    (N, g, c_v, L). Only v, the inputs and the (terms x heads) statistics are kept; backward
    recomputes S and P, then each term under autograd for its BatchNorm gradient (`_autograd_grads`).
    """

    @staticmethod
    def forward(ctx, term_fns, bn, weight, bias, v, *inputs):
        ctx.dtypes = [x.dtype for x in (v, *inputs)]
        v, *inputs = promote([v, *inputs])  # float32 (or float64) under AMP too
        S, mean, inv_std = _similarity(term_fns, bn, weight, inputs)
        ctx.training = bn.training or bn.running_mean is None
        with no_autocast(v):
            p = S.softmax(dim=-1)
            del S
            sv = v @ p.transpose(-1, -2)
        ctx.term_fns, ctx.bn, ctx.has_weight = term_fns, bn, weight is not None
        ctx.save_for_backward(mean, inv_std, weight if weight is not None else torch.empty(0), v, *inputs)
        return sv

    @staticmethod
    def backward(ctx, dsv):
        mean, inv_std, weight, v, *inputs = ctx.saved_tensors
        weight = weight if ctx.has_weight else None
        with no_autocast(v):
            S, _, _ = _similarity(ctx.term_fns, ctx.bn, weight, inputs, stats=(mean, inv_std))
            p = S.softmax(dim=-1)
            del S
            dsv = dsv.to(v.dtype)
            dp = dsv.transpose(-1, -2) @ v  # (N, g, L, L)
            dv = dsv @ p if ctx.needs_input_grad[4] else None
            dS = dp.sub_(torch.linalg.vecdot(dp, p).unsqueeze(-1)).mul_(p)  # softmax backward, in place
            del p, dp
            input_grads, dw, db = _autograd_grads(ctx.term_fns, dS, inputs, ctx.needs_input_grad[5:], mean,
                                                  inv_std, weight, ctx.training)
        input_grads = [x if x is None else x.to(dt) for x, dt in zip(input_grads, ctx.dtypes[1:])]
        dw = dw if ctx.has_weight and ctx.needs_input_grad[2] else None
        db = db if ctx.needs_input_grad[3] else None
        dv = None if dv is None else dv.to(ctx.dtypes[0])
        return (None, None, dw, db, dv, *input_grads)


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module):
    """Recompute under activation checkpointing without touching BatchNorm running statistics."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


# ------------------------------------------------------------------------------ resampling

def resample_relative_1d(table: torch.Tensor, new_len: int, dim: int) -> torch.Tensor:
    """Linear resampling of a relative table along `dim` (2n-1 offsets -> new_len offsets), offset 0 kept centred."""
    if table.shape[dim] == new_len:
        return table
    t = table.movedim(dim, -1)
    shape = t.shape
    out = F.interpolate(t.reshape(1, -1, shape[-1]).float(), size=new_len, mode="linear", align_corners=True)
    return out.reshape(*shape[:-1], new_len).to(table.dtype).movedim(-1, dim)


def resample_relative_flat(table: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> torch.Tensor:
    """Resample a flattened-offset table (C, 2HW-1) built for `old_hw` to (C, 2H'W'-1) for `new_hw`.

    A flattened offset d = i - j is read as the 2-D offset (dy, dx) = divmod(d, W), dx in [0, W):
    the table becomes a (2H, W) grid (its one missing corner cell copied from its neighbour). Each
    new offset (dy', dx') is scaled by the size ratio, (dy' (H-1)/(H'-1), dx' (W-1)/(W'-1)), so
    offset 0 stays offset 0, and read bilinearly from that grid (clamped at the border).
    attnzoo's own choice; the official code has no resampling.
    """
    (H, W), (H2, W2) = old_hw, new_hw
    if (H, W) == (H2, W2):
        return table
    C = table.shape[0]
    grid = torch.cat([table[:, :1], table], dim=1).reshape(1, C, 2 * H, W).float()  # rows dy = -H .. H-1
    d = torch.arange(-H2 * W2 + 1, H2 * W2, dtype=torch.float64)
    dy, dx = torch.div(d, W2, rounding_mode="floor"), torch.remainder(d, W2)
    dy = dy * ((H - 1) / (H2 - 1) if H2 > 1 else 0.0)
    dx = dx * ((W - 1) / (W2 - 1) if W2 > 1 else 0.0)
    row, col = dy + H, dx  # pixel coordinates in the grid
    norm = torch.stack([2 * col / max(W - 1, 1) - 1, 2 * row / (2 * H - 1) - 1], dim=-1).float()
    out = F.grid_sample(grid, norm.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(C, -1).to(table.dtype)


# ------------------------------------------------------------------------------- the block

class LESA(nn.Module):
    """Locally enhanced self-attention (replaces a 3x3 convolution); see the module docstring.

    Args:
        in_planes: input channels C_in.
        out_planes: output channels (default `in_planes`); divisible by 2 * groups.
        fmap_size: the input feature-map size (int or (H, W)) the block is built for.
        stride: output stride, applied by average pooling after the fusion.
        groups: heads of the attention and groups of the unary 3x3 convolution.
        pe_type: ``classification`` or ``detection_qr``.
        df_channel_shrink, df_kernel_size, df_group: the dynamic-fusion gate; one reduction
            convolution per entry of `df_channel_shrink`, `df_kernel_size` / `df_group` hold one
            entry per reduction plus one for the projection.
        with_cp: activation checkpointing of the unary and binary terms during training.
        impl: ``lean`` (default) or ``reference`` (see the module docstring).

    Shapes: (N, in_planes, H, W) with (H, W) == fmap_size -> (N, out_planes, H // stride, W // stride).
    """

    attention_kind = "global"  # for attnzoo.analysis: attention_weights gives the binary term's

    def __init__(self, in_planes: int, out_planes: int | None = None, fmap_size=14, stride: int = 1,
                 groups: int = 8, pe_type: str = "classification", df_channel_shrink=(2,),
                 df_kernel_size=(1, 1), df_group=(1, 1), with_cp: bool = False, impl: str = "lean"):
        super().__init__()
        out_planes = in_planes if out_planes is None else out_planes
        check_channels("LESA", in_planes=in_planes, out_planes=out_planes, groups=groups)
        if groups < 1 or in_planes % groups or out_planes % (2 * groups):
            raise UserError(f"LESA: channels in={in_planes}, out={out_planes} do not fit groups={groups}; "
                            f"in_planes must be divisible by groups and out_planes by 2*groups={2 * groups}")
        if pe_type not in PE_TYPES:
            raise UserError(f"LESA: unknown pe_type '{pe_type}'; {choices_hint(pe_type, PE_TYPES)}")
        if impl not in IMPLS:
            raise UserError(f"LESA: unknown impl '{impl}'; {choices_hint(impl, IMPLS)}")
        df_channel_shrink, df_kernel_size, df_group = list(df_channel_shrink), list(df_kernel_size), list(df_group)
        if len(df_kernel_size) != len(df_channel_shrink) + 1 or len(df_group) != len(df_channel_shrink) + 1:
            raise UserError(f"LESA: df_kernel_size {df_kernel_size} and df_group {df_group} need one entry per "
                            f"df_channel_shrink {df_channel_shrink} plus one for the projection")
        self.fmap_size = _pair(fmap_size)
        H, W = self.fmap_size
        if stride > 1 and (H % stride or W % stride):
            raise UserError(f"LESA: feature map {H}x{W} is not divisible by stride {stride} "
                            "(pooling and the strided shortcut would disagree)")
        self.in_planes, self.out_planes, self.branch_planes = in_planes, out_planes, out_planes
        self.groups, self.stride, self.pe_type, self.impl = groups, stride, pe_type, impl
        self.with_cp = with_cp
        self.qk_planes = out_planes // groups // 2
        self.v_planes = out_planes // groups
        L = H * W
        n_terms = 3 if pe_type == "classification" else 2

        # binary term: global multi-head self-attention
        self.qkv_transform = nn.Conv1d(in_planes, 2 * out_planes, kernel_size=1, bias=False)
        self.bn_qkv = nn.BatchNorm1d(2 * out_planes)
        self.bn_similarity = nn.BatchNorm2d(groups * n_terms)
        self.bn_output = nn.BatchNorm1d(out_planes * (2 if pe_type == "classification" else 1))

        # unary term: grouped 3x3 convolution (+ 1x1 when grouped)
        x_layers = [nn.Conv2d(in_planes, out_planes, 3, padding=1, groups=groups, bias=False)]
        if groups != 1:
            x_layers.append(nn.Conv2d(out_planes, out_planes, 1, bias=False))
        self.x_transform = nn.Sequential(*x_layers)
        self.bn_x = nn.BatchNorm2d(out_planes)

        # dynamic fusion gate
        layers, ch = [nn.ReLU(inplace=True)], 2 * out_planes
        for shrink, ks, grp in zip(df_channel_shrink, df_kernel_size, df_group):
            nxt = int(ch / shrink)
            layers += [nn.Conv2d(ch, nxt, ks, padding=(ks - 1) // 2, groups=grp, bias=False),
                       nn.BatchNorm2d(nxt), nn.ReLU(inplace=True)]
            ch = nxt
        self.reasoning = nn.Sequential(*layers)
        ks = df_kernel_size[-1]
        self.projection = nn.Sequential(
            nn.Conv2d(ch, out_planes, ks, padding=(ks - 1) // 2, groups=df_group[-1], bias=False),
            nn.BatchNorm2d(out_planes))

        # relative position embedding
        if pe_type == "classification":
            self.pe_dim = 2 * self.qk_planes + self.v_planes
            self.relative = nn.Parameter(torch.randn(self.pe_dim, 2 * L - 1))
            self.register_buffer("flat_index", relative_index(L), persistent=False)
        else:
            self.pe_dim = self.qk_planes
            scale = self.pe_dim ** -0.5
            self.rel_height = nn.Parameter(torch.randn(2 * H - 1, self.pe_dim) * scale)
            self.rel_width = nn.Parameter(torch.randn(2 * W - 1, self.pe_dim) * scale)
            self.register_buffer("index_h", relative_index(H), persistent=False)
            self.register_buffer("index_w", relative_index(W), persistent=False)
        self.pooling = nn.AvgPool2d(stride, stride=stride) if stride > 1 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        """The official initialisation (a network's own init may re-initialise the Conv2d/BN2d)."""
        nn.init.normal_(self.qkv_transform.weight, 0.0, math.sqrt(1.0 / self.in_planes))
        if self.pe_type == "classification":
            nn.init.normal_(self.relative, 0.0, math.sqrt(1.0 / self.v_planes))

    def extra_repr(self) -> str:
        return (f"{self.in_planes}, {self.out_planes}, fmap_size={self.fmap_size}, stride={self.stride}, "
                f"groups={self.groups}, pe_type={self.pe_type}, impl={self.impl}")

    # ------------------------------------------------------------------ state-dict resampling
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Tables trained for another feature-map size are resampled to this block's size (ours)."""
        H, W = self.fmap_size
        key = prefix + "relative"
        if self.pe_type == "classification" and key in state_dict:
            t = state_dict[key]
            if t.dim() == 2 and t.shape[0] == self.pe_dim and t.shape[1] != self.relative.shape[1]:
                old_l = (t.shape[1] + 1) // 2
                side = math.isqrt(old_l)
                if side * side != old_l or W != H:
                    error_msgs.append(f"{key}: cannot resample a table of {old_l} positions to {H}x{W} "
                                      "(only square maps)")
                else:
                    state_dict[key] = resample_relative_flat(t, (side, side), (H, W))
        for name, n in (("rel_height", H), ("rel_width", W)):
            key = prefix + name
            if self.pe_type == "detection_qr" and key in state_dict and state_dict[key].shape[0] != 2 * n - 1:
                state_dict[key] = resample_relative_1d(state_dict[key], 2 * n - 1, dim=0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ---------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("LESA", x, self.in_planes)
        N, C, H, W = x.shape
        if (H, W) != self.fmap_size:
            raise UserError(f"LESA block built for {self.fmap_size[0]}x{self.fmap_size[1]} feature maps got "
                            f"{H}x{W}; build the network for this input size (img_size=...)")
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        if use_cp:
            ctx = lambda: (contextlib.nullcontext(), _frozen_bn_stats(self))  # noqa: E731
            unary = checkpoint.checkpoint(self._unary, x, use_reentrant=False, context_fn=ctx)
            binary = checkpoint.checkpoint(self._binary, x.reshape(N, C, H * W), use_reentrant=False,
                                           context_fn=ctx)
        else:
            unary = self._unary(x)
            binary = self._binary(x.reshape(N, C, H * W))
        binary = binary.view(N, self.out_planes, H, W)
        gate = torch.sigmoid(self.projection(self.reasoning(torch.cat([unary, binary], dim=1))))
        return self.pooling(gate * binary + unary)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The binary term's attention p = softmax(sum_t BN_t(term_t)) with the similarity
        BatchNorm's running statistics: (N, C, H, W) -> (N, groups, HW, HW), rows sum to 1.
        For analysis: it materialises one HW x HW map per head."""
        N, C, H, W = x.shape
        if (H, W) != self.fmap_size:
            raise UserError(f"LESA block built for {self.fmap_size[0]}x{self.fmap_size[1]} feature maps got "
                            f"{H}x{W}")
        g, cq, cv, L = self.groups, self.qk_planes, self.v_planes, H * W
        qkv = self.bn_qkv(self.qkv_transform(x.reshape(N, C, L))).view(N, g, 2 * cq + cv, L)
        q, k, _ = torch.split(qkv, [cq, cq, cv], dim=2)
        term_fns, inputs = self._pe_inputs(q, k)
        bn = self.bn_similarity
        stats = (bn.running_mean.view(len(term_fns), g),
                 torch.rsqrt(bn.running_var + bn.eps).view(len(term_fns), g))
        sim, _, _ = _similarity(term_fns, bn, bn.weight, inputs, stats=stats)
        return sim.softmax(dim=-1)

    def _unary(self, x):
        return self.bn_x(self.x_transform(x))

    def _binary(self, x):
        """(N, C_in, L) -> (N, out_planes, L)."""
        N, _, L = x.shape
        g, cq, cv = self.groups, self.qk_planes, self.v_planes
        qkv = self.qkv_transform(x)
        folded = not self.training and not torch.is_grad_enabled()
        if self.impl == "lean" and self.pe_type == "classification" and not folded:
            return self._binary_flat(qkv)
        qkv = self.bn_qkv(qkv).view(N, g, 2 * cq + cv, L)
        q, k, v = torch.split(qkv, [cq, cq, cv], dim=2)  # (N, g, c, L)
        if self.impl == "reference":
            return self._binary_reference(q, k, v)
        return self._binary_folded(q, k, v) if folded else self._binary_lean(q, k, v)

    def _pe_inputs(self, q, k):
        cq = self.qk_planes
        if self.pe_type == "classification":
            rel_q, rel_k = self.relative[:cq], self.relative[cq:2 * cq]
            return (_term_qk, _term_qr_flat, _term_kr_flat), (q, k, rel_q, rel_k)
        return (_term_qk, _term_qr_2d), (q, k, self.rel_height, self.rel_width, self.index_h, self.index_w)

    def _combine_output(self, sv, sve):
        """sv, sve (N, g, c, L) -> BN and sum -> (N, out_planes, L), in the official channel layout."""
        N, L = sv.shape[0], sv.shape[-1]
        if sve is None:
            return self.bn_output(sv.reshape(N, self.out_planes, L))
        stacked = torch.cat([sv, sve], dim=-1).view(N, 2 * self.out_planes, L)
        return self.bn_output(stacked).view(N, self.out_planes, 2, L).sum(dim=2)

    def _binary_flat(self, qkv):
        """classification, with autograd: `lesa_flat.FlatAttention` from the qkv before its BatchNorm."""
        bq, bs = self.bn_qkv, self.bn_similarity
        split = [self.qk_planes, self.qk_planes, self.v_planes]
        rel_q, rel_k, rel_v = self.relative.split(split, dim=0)
        sv, sve = FlatAttention.apply(bq, bs, bq.weight, bq.bias, bs.weight, bs.bias, qkv, self.groups, split,
                                      rel_q, rel_k, rel_v)
        return self._combine_output(sv, sve)

    def _binary_lean(self, q, k, v):
        bn = self.bn_similarity
        term_fns, inputs = self._pe_inputs(q, k)
        return self._combine_output(_LeanAttention.apply(term_fns, bn, bn.weight, bn.bias, v, *inputs), None)

    def _binary_folded(self, q, k, v):
        """Eval mode, no grad: BatchNorms folded into scales; same function as the other paths."""
        N, g, cv, L = v.shape
        bs = self.bn_similarity
        a = (bs.weight * torch.rsqrt(bs.running_var + bs.eps)).view(-1, g, 1, 1)  # shifts cancel in softmax
        bo = self.bn_output
        s = bo.weight * torch.rsqrt(bo.running_var + bo.eps)
        shift = bo.bias - bo.running_mean * s
        if self.pe_type == "detection_qr":
            mask = _term_qr_2d(q * a[1], k, self.rel_height, self.rel_width, self.index_h, self.index_w)
            out = F.scaled_dot_product_attention((q * a[0]).transpose(-1, -2), k.transpose(-1, -2),
                                                 (v * s.view(1, g, cv, 1)).transpose(-1, -2),
                                                 attn_mask=mask, scale=1.0)  # (N, g, L, cv)
            return out.transpose(-1, -2).reshape(N, g * cv, L) + shift.view(1, -1, 1)
        cq = self.qk_planes
        rel_q, rel_k, rel_v = self.relative.split([cq, cq, cv], dim=0)
        s = s.view(g, cv, 2)
        logits = _term_qr_flat(q * a[1], k, rel_q, rel_k).contiguous()
        logits.add_(_term_kr_flat(q, k * a[2], rel_q, rel_k))
        logits.add_(_term_qk(q * a[0], k))
        p = logits.softmax(dim=-1)
        del logits
        out = p @ (v * s[:, :, 0].view(1, g, cv, 1)).transpose(-1, -2)  # (N, g, L, cv)
        out += unskew(p) @ (rel_v.flip(-1).view(1, cv, -1) * s[:, :, 1].view(g, cv, 1)).transpose(-1, -2)
        return out.transpose(-1, -2).reshape(N, g * cv, L) + shift.view(g * cv, 2).sum(-1).view(1, -1, 1)

    def _binary_reference(self, q, k, v):
        """The official formulation with every (channels x HW x HW) embedding materialised."""
        N, g, cv, L = v.shape
        cq = self.qk_planes
        qk = torch.einsum("ngci,ngcj->ngij", q, k)
        if self.pe_type == "classification":
            emb = self.relative[:, self.flat_index]  # (pe_dim, L, L)
            q_emb, k_emb, v_emb = torch.split(emb, [cq, cq, cv], dim=0)
            qr = torch.einsum("ngci,cij->ngij", q, q_emb)
            kr = torch.einsum("ngci,cij->ngij", k, k_emb).transpose(2, 3)
            sim = self.bn_similarity(torch.cat([qk, qr, kr], dim=1)).view(N, 3, g, L, L).sum(dim=1)
        else:
            qr = _term_qr_2d(q, k, self.rel_height, self.rel_width, self.index_h, self.index_w)
            sim = self.bn_similarity(torch.cat([qk, qr], dim=1)).view(N, 2, g, L, L).sum(dim=1)
        p = F.softmax(sim, dim=3)
        sv = torch.einsum("ngij,ngcj->ngci", p, v)
        sve = torch.einsum("ngij,cij->ngci", p, v_emb) if self.pe_type == "classification" else None
        return self._combine_output(sv, sve)


def lesa_block(channels: int, **kwargs) -> LESA:
    """`create_block('lesa', C, fmap_size=..., ...)`: a LESA block mapping C -> C channels."""
    return LESA(channels, channels, **kwargs)

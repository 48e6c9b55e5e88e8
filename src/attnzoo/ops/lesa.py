"""LESA's binary term behind one function (the block is `attnzoo.layers.lesa.LESA`).

    lesa_attention(qkv, bn_qkv, bn_similarity, bn_output, groups, split, pe_type, pe, impl='lean')
        qkv (N, 2C, L), the qkv convolution's output before its BatchNorm -> (N, C, L)

Global multi-head self-attention over the L = H*W positions with a relative position embedding,
BatchNorm on the similarity terms and on the outputs (the formulas are in `attnzoo.layers.lesa`).
q, k, v are the `groups` heads of BN_qkv(qkv), split into `split` = [c_q, c_q, c_v] channels per
head; `pe` holds the embedding of `pe_type`:

* ``classification`` -- (relative (2c_q + c_v, 2L-1), flat_index (L, L));
* ``detection_qr`` -- (rel_height (2H-1, c_q), rel_width (2W-1, c_q), index_h (H, H), index_w (W, W)).

The three BatchNorms are the block's modules: their statistics are used and updated as
`nn.BatchNorm` does. Three paths compute the same function:

* ``impl="lean"`` (default) with autograd or in training -- ``classification`` runs
  `lesa_flat.FlatAttention` (saves only the qkv input, the tables and per-head statistics; closed-form
  BatchNorm statistics and gradients, chunked work buffers), ``detection_qr`` `lesa_lean.LeanAttention`
  (recomputes the similarity terms in backward). No (HW x HW) tensor is saved for backward.
* ``impl="lean"`` in eval mode without grad -- the similarity BatchNorm is folded into per-head
  scales (its shifts cancel in the softmax) and the output BatchNorm into the values; ``detection_qr``
  is one `F.scaled_dot_product_attention` call with the relative logits as additive mask,
  ``classification`` an explicit softmax (its value term needs the weights).
* ``impl="reference"`` -- the official formulation: every (channels x HW x HW) embedding tensor
  materialised, the similarity terms concatenated, BatchNorm, summed. The baseline of
  ``benchmarks/lesa_memory.py`` and of the equivalence tests.

Dtypes: the lean autograd Functions compute in float32 (float64 stays float64) and return the
input's dtype, so a network cast to bfloat16 stays bfloat16; under autocast they return float32, as
autocast's softmax does.

`lesa_attention` is registered with timm as an FX leaf (`register_notrace_function`), so networks
built from LESA blocks trace with timm's and torchvision's feature extractors. TorchScript cannot
compile it: the lean path is custom autograd Functions (see `attnzoo.layers.NOT_SCRIPTABLE`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ..errors import UserError, choices_hint
from .lesa_flat import FlatAttention, skew, unskew
from .lesa_lean import LeanAttention, similarity

PE_TYPES = ("classification", "detection_qr")
IMPLS = ("lean", "reference")


# Tables are stored as the official code does, indexed by query-minus-key offsets (i - j + L - 1);
# flipping a table along its offsets gives key-minus-query order, the order `skew` reads.
# ----------------------------------------------------------------------------- similarity terms

def term_qk(q, k, *_):
    """(N, g, c, L) x2 -> (N, g, L, L): q_i . k_j."""
    return q.transpose(-1, -2) @ k


def term_qr_flat(q, k, rel_q, rel_k):
    """q_i . r_q[i - j]  (classification)."""
    return skew(q.transpose(-1, -2) @ rel_q.flip(-1))


def term_kr_flat(q, k, rel_q, rel_k):
    """k_j . r_k[j - i]  (classification; the official code transposes the key term)."""
    return skew(k.transpose(-1, -2) @ rel_k.flip(-1)).transpose(-1, -2)


def term_qr_2d(q, k, rel_h, rel_w, index_h, index_w):
    """q_(x,y) . (r_h[x' - x] + r_w[y' - y])  (detection_qr), (N, g, H*W, H*W)."""
    N, g, c, L = q.shape
    H, W = index_h.shape[0], index_w.shape[0]
    qt = q.transpose(-1, -2).reshape(N, g, H, W, c)
    # index_*[a, b] = a - b + n - 1; key-minus-query offsets are its transpose.
    lw = (qt @ rel_w.t()).gather(-1, index_w.t().expand(N, g, H, W, W))  # [x, y, y'] = q.r_w[y'-y]
    idx_h = index_h.t()[:, None, :].expand(N, g, H, W, H)
    lh = (qt @ rel_h.t()).gather(-1, idx_h)  # [x, y, x'] = q.r_h[x'-x]
    return (lh[..., :, None] + lw[..., None, :]).reshape(N, g, L, L)


def similarity_terms(pe_type, pe, q, k):
    """The similarity terms of `pe_type` and the inputs they take."""
    if pe_type == "classification":
        cq = q.shape[2]
        relative = pe[0]
        return (term_qk, term_qr_flat, term_kr_flat), (q, k, relative[:cq], relative[cq:2 * cq])
    return (term_qk, term_qr_2d), (q, k, *pe)


# ------------------------------------------------------------------------------- the dispatch

def check_options(pe_type, impl) -> None:
    """UserError naming the valid choices for an unknown position embedding or implementation."""
    if pe_type not in PE_TYPES:
        raise UserError(f"LESA: unknown pe_type '{pe_type}'; {choices_hint(str(pe_type), PE_TYPES)}")
    if impl not in IMPLS:
        raise UserError(f"LESA: unknown impl '{impl}'; {choices_hint(str(impl), IMPLS)}")


@register_notrace_function
def lesa_attention(qkv, bn_qkv, bn_similarity, bn_output, groups, split, pe_type, pe, impl="lean"):
    """LESA's binary term, (N, 2C, L) qkv before its BatchNorm -> (N, C, L); see the module docstring."""
    check_options(pe_type, impl)
    N, _, L = qkv.shape
    folded = not bn_similarity.training and not torch.is_grad_enabled()
    if impl == "lean" and pe_type == "classification" and not folded:
        rel_q, rel_k, rel_v = pe[0].split(split, dim=0)
        sv, sve = FlatAttention.apply(bn_qkv, bn_similarity, bn_qkv.weight, bn_qkv.bias, bn_similarity.weight,
                                      bn_similarity.bias, qkv, groups, split, rel_q, rel_k, rel_v)
        return _combine_output(bn_output, sv, sve)
    qkv = bn_qkv(qkv).view(N, groups, sum(split), L)
    q, k, v = torch.split(qkv, split, dim=2)  # (N, g, c, L)
    if impl == "reference":
        return _reference(q, k, v, bn_similarity, bn_output, pe_type, pe)
    if folded:
        return _folded(q, k, v, bn_similarity, bn_output, pe_type, pe)
    term_fns, inputs = similarity_terms(pe_type, pe, q, k)
    bs = bn_similarity
    return _combine_output(bn_output, LeanAttention.apply(term_fns, bs, bs.weight, bs.bias, v, *inputs), None)


def attention_probabilities(q, k, bn_similarity, pe_type, pe):
    """p = softmax(sum_t BN_t(term_t)) with the similarity BatchNorm's running statistics:
    q, k (N, g, c_q, L) -> (N, g, L, L), rows sum to 1."""
    term_fns, inputs = similarity_terms(pe_type, pe, q, k)
    bn, n_terms, g = bn_similarity, len(term_fns), q.shape[1]
    stats = (bn.running_mean.view(n_terms, g), torch.rsqrt(bn.running_var + bn.eps).view(n_terms, g))
    sim, _, _ = similarity(term_fns, bn, bn.weight, inputs, stats=stats)
    return sim.softmax(dim=-1)


def _combine_output(bn_output, sv, sve):
    """sv, sve (N, g, c, L) -> BN and sum -> (N, g*c, L), in the official channel layout."""
    N, g, cv, L = sv.shape
    if sve is None:
        return bn_output(sv.reshape(N, g * cv, L))
    stacked = torch.cat([sv, sve], dim=-1).view(N, 2 * g * cv, L)
    return bn_output(stacked).view(N, g * cv, 2, L).sum(dim=2)


def _folded(q, k, v, bs, bo, pe_type, pe):
    """Eval mode, no grad: BatchNorms folded into scales; same function as the other paths."""
    N, g, cv, L = v.shape
    a = (bs.weight * torch.rsqrt(bs.running_var + bs.eps)).view(-1, g, 1, 1)  # shifts cancel in softmax
    s = bo.weight * torch.rsqrt(bo.running_var + bo.eps)
    shift = bo.bias - bo.running_mean * s
    if pe_type == "detection_qr":
        mask = term_qr_2d(q * a[1], k, *pe)
        out = F.scaled_dot_product_attention((q * a[0]).transpose(-1, -2), k.transpose(-1, -2),
                                             (v * s.view(1, g, cv, 1)).transpose(-1, -2),
                                             attn_mask=mask, scale=1.0)  # (N, g, L, cv)
        return out.transpose(-1, -2).reshape(N, g * cv, L) + shift.view(1, -1, 1)
    cq = q.shape[2]
    rel_q, rel_k, rel_v = pe[0].split([cq, cq, cv], dim=0)
    s = s.view(g, cv, 2)
    logits = term_qr_flat(q * a[1], k, rel_q, rel_k).contiguous()
    logits.add_(term_kr_flat(q, k * a[2], rel_q, rel_k))
    logits.add_(term_qk(q * a[0], k))
    p = logits.softmax(dim=-1)
    del logits
    out = p @ (v * s[:, :, 0].view(1, g, cv, 1)).transpose(-1, -2)  # (N, g, L, cv)
    out += unskew(p) @ (rel_v.flip(-1).view(1, cv, -1) * s[:, :, 1].view(g, cv, 1)).transpose(-1, -2)
    return out.transpose(-1, -2).reshape(N, g * cv, L) + shift.view(g * cv, 2).sum(-1).view(1, -1, 1)


def _reference(q, k, v, bs, bo, pe_type, pe):
    """The official formulation with every (channels x HW x HW) embedding materialised."""
    N, g, cv, L = v.shape
    cq = q.shape[2]
    qk = torch.einsum("ngci,ngcj->ngij", q, k)
    if pe_type == "classification":
        relative, flat_index = pe
        emb = relative[:, flat_index]  # (pe_dim, L, L)
        q_emb, k_emb, v_emb = torch.split(emb, [cq, cq, cv], dim=0)
        qr = torch.einsum("ngci,cij->ngij", q, q_emb)
        kr = torch.einsum("ngci,cij->ngij", k, k_emb).transpose(2, 3)
        sim = bs(torch.cat([qk, qr, kr], dim=1)).view(N, 3, g, L, L).sum(dim=1)
    else:
        qr = term_qr_2d(q, k, *pe)
        sim = bs(torch.cat([qk, qr], dim=1)).view(N, 2, g, L, L).sum(dim=1)
    p = F.softmax(sim, dim=3)
    sv = torch.einsum("ngij,ngcj->ngci", p, v)
    sve = torch.einsum("ngij,cij->ngci", p, v_emb) if pe_type == "classification" else None
    return _combine_output(bo, sv, sve)

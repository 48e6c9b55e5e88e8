"""The lean path of LESA's attention for any similarity terms without a value table (used for
``detection_qr``; see `attnzoo.ops.lesa`): one autograd function from the features to the
aggregated values that saves no (HW x HW) tensor and recomputes the similarity in backward.
"""
from __future__ import annotations

import torch

from ._common import no_autocast
from .lesa_flat import promote, result_dtype, update_running_stats


def similarity(term_fns, bn, weight, inputs, stats=None):
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
    leaves = [x.detach().requires_grad_(r) for x, r in zip(inputs, need, strict=False)]
    wanted = [x for x, r in zip(leaves, need, strict=False) if r]
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
            grads = [a if b is None else (b if a is None else a + b) for a, b in zip(grads, gs, strict=False)]
        del x, xhat, dx
    it = iter(grads)
    return [next(it) if r else None for r in need], torch.cat(dweight), dS_sum.repeat(len(term_fns))


class LeanAttention(torch.autograd.Function):
    """Normalised similarity, softmax and aggregation in one function that saves no (HW x HW)
    tensor, for any similarity terms without a value table (here: detection_qr; classification has
    its own, faster `attnzoo.ops.lesa_flat.FlatAttention`).

    Forward: S = sum_t BN_t(term_t) (see `similarity`), P = softmax(S), returns sv = v P^T,
    (N, g, c_v, L). Only v, the inputs and the (terms x heads) statistics are kept; backward
    recomputes S and P, then each term under autograd for its BatchNorm gradient (`_autograd_grads`).
    """

    @staticmethod
    def forward(ctx, term_fns, bn, weight, bias, v, *inputs):
        ctx.dtypes = [x.dtype for x in (v, *inputs)]
        v, *inputs = promote([v, *inputs])  # float32 (or float64) under AMP too
        S, mean, inv_std = similarity(term_fns, bn, weight, inputs)
        ctx.training = bn.training or bn.running_mean is None
        with no_autocast(v):
            p = S.softmax(dim=-1)
            del S
            sv = v @ p.transpose(-1, -2)
        ctx.term_fns, ctx.bn, ctx.has_weight = term_fns, bn, weight is not None
        ctx.save_for_backward(mean, inv_std, weight if weight is not None else torch.empty(0), v, *inputs)
        return sv.to(result_dtype(sv, ctx.dtypes[0]))

    @staticmethod
    def backward(ctx, dsv):
        mean, inv_std, weight, v, *inputs = ctx.saved_tensors
        weight = weight if ctx.has_weight else None
        with no_autocast(v):
            S, _, _ = similarity(ctx.term_fns, ctx.bn, weight, inputs, stats=(mean, inv_std))
            p = S.softmax(dim=-1)
            del S
            dsv = dsv.to(v.dtype)
            dp = dsv.transpose(-1, -2) @ v  # (N, g, L, L)
            dv = dsv @ p if ctx.needs_input_grad[4] else None
            dS = dp.sub_(torch.linalg.vecdot(dp, p).unsqueeze(-1)).mul_(p)  # softmax backward, in place
            del p, dp
            input_grads, dw, db = _autograd_grads(ctx.term_fns, dS, inputs, ctx.needs_input_grad[5:], mean,
                                                  inv_std, weight, ctx.training)
        input_grads = [x if x is None else x.to(dt) for x, dt in zip(input_grads, ctx.dtypes[1:], strict=False)]
        dw = dw if ctx.has_weight and ctx.needs_input_grad[2] else None
        db = db if ctx.needs_input_grad[3] else None
        dv = None if dv is None else dv.to(ctx.dtypes[0])
        return (None, None, dw, db, dv, *input_grads)

"""The lean training path of LESA's ``classification`` attention (see `attnzoo.ops.lesa`).

With L = H*W positions, g heads and a table r (c, 2L-1) indexed by the flattened query-minus-key
offset o = i - j + L - 1, the three similarity terms are

    x0[i, j] = q_i . k_j,    x1[i, j] = q_i . r_q[i - j + L - 1],    x2[i, j] = k_j . r_k[j - i + L - 1],

each followed by a BatchNorm channel per head; P = softmax(sum_t BN_t(x_t)) aggregates v and the
value table. `FlatAttention` computes this without any (channels x L x L) embedding tensor and
saves no (L x L) tensor for backward:

* the BatchNorm batch statistics come in closed form from (c x c) Gram matrices (`flat_stats`),
  so no term has to be held or passed over just for its mean and variance;
* the similarity is accumulated, scaled, in one buffer; the relative terms are (L x c) @ (c, 2L-1)
  products read through a strided "skew" view;
* the batch is processed in chunks of samples through work buffers allocated once per call, so the
  (L x L)-sized temporaries are bounded and reused rather than allocated per step; a chunk is sized
  from the device (`chunk_budget`): cache-sized on the CPU, a share of the free memory on CUDA (at
  usual batch sizes the whole batch, a few large launches instead of thousands of small ones);
* backward recomputes S and P once per chunk, and the BatchNorm parts of the gradient that need
  the terms themselves again have closed forms in Gram matrices (`_correct`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import no_autocast

# One (samples, heads, L, 2L-1) work buffer of a chunk stays under CHUNK_BYTES on the CPU (the chunk's
# buffers and temporaries, about six such, then stay cache-sized) and under CUDA_FREE_SHARE of the
# free memory on CUDA.
CHUNK_BYTES = 8 << 20
CUDA_FREE_SHARE = 1 / 32


def skew(rel: torch.Tensor) -> torch.Tensor:
    """(..., L, 2L-1) per key-minus-query offset -> (..., L, L) view, ``out[i, j] = rel[i, j - i + L - 1]``.

    A strided view (row stride 2L-2), no copy: the relative-to-absolute step of relative attention.
    While `torch.export` traces (ONNX export), a copy instead: an exported as_strided is fixed to
    the traced batch size.
    """
    L = rel.shape[-2]
    if torch.compiler.is_exporting():  # row r of the reversed rows, laid out at width 2L, starts r later
        rows = F.pad(rel.flip(-2).flatten(-2), (0, L)).unflatten(-1, (L, 2 * L))  # (..., L, 2L)
        return rows[..., :L].flip(-2)
    rel = rel.contiguous()
    band = rel.narrow(-1, L - 1, L)  # starts at offset L-1; as_strided keeps a view's offset, which
    return band.as_strided(band.shape, (*rel.stride()[:-2], rel.stride(-2) - 1, 1))  # compiles unbroken


def unskew(p: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of `skew`: (..., L, L) -> (..., L, 2L-1), zeros where no key maps.

    `out`, when given, must be zero outside the band that `skew` reads (a buffer only ever written
    through `unskew` stays so). While `torch.export` traces, without writing into a view (`skew`'s)."""
    L = p.shape[-1]
    if out is None and torch.compiler.is_exporting():  # skew's steps backwards
        rows = F.pad(p.flip(-2), (0, L)).flatten(-2)  # (..., 2L*L): row r of the reversed rows, r later
        return rows[..., :L * (2 * L - 1)].unflatten(-1, (L, 2 * L - 1)).flip(-2)
    out = p.new_zeros(*p.shape[:-1], 2 * L - 1) if out is None else out
    skew(out).copy_(p)
    return out


def promote(tensors):
    """Floating tensors in float32 (float64 stays float64): the lean functions compute in one dtype."""
    dt = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return [t.to(dt) if t.is_floating_point() else t for t in tensors]


def result_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """The dtype a lean function returns for an input of `dtype`, having computed in `t`'s: the
    input's (a network cast to bfloat16 stays bfloat16), but under autocast the computed one (as
    autocast's softmax, float32)."""
    if t.device.type != "meta" and torch.is_autocast_enabled(t.device.type):
        return t.dtype
    return dtype


# The closed forms below (statistics and backward over Gram matrices) are derived in docs/lesa_flat.md.
# ----------------------------------------------------------------------- window sums and Grams

def _prefix(x: torch.Tensor) -> torch.Tensor:
    """Cumulative sums along dim 0 with a leading zero row: out[m] = sum of x[:m]."""
    return torch.cat([x.new_zeros(1, *x.shape[1:]), x.cumsum(0)])


def _query_windows(r: torch.Tensor) -> torch.Tensor:
    """(2L-1, ...) per offset o -> (L, ...): out[i] = sum_{o=i}^{i+L-1} r[o], the offsets query i meets."""
    L = (r.shape[0] + 1) // 2
    P = _prefix(r)
    return P[L:] - P[:L]


def _offset_windows(x: torch.Tensor) -> torch.Tensor:
    """(L, ...) per query i -> (2L-1, ...): out[o] = sum of x[i] over the queries i that meet offset o
    (i in [o-L+1, o], the key j = i - o + L - 1 being in range)."""
    L = x.shape[0]
    o = torch.arange(2 * L - 1, device=x.device)
    P = _prefix(x)
    return P[(o + 1).clamp(max=L)] - P[(o - L + 1).clamp(min=0)]


def _per_query(A: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """(L, c, c) x (N, g, c, L) -> (N, g, c, L): out[..., i] = A[i] @ feat[..., i]."""
    N, g, c, L = feat.shape
    return (A @ feat.permute(3, 2, 0, 1).reshape(L, c, N * g)).view(L, c, N, g).permute(2, 3, 1, 0)


def _offset_gram(rel: torch.Tensor) -> torch.Tensor:
    """(c, 2L-1) table -> (L, c, c): sum of r_o r_o^T over the offsets o that query i meets."""
    r = rel.t()
    return _query_windows(r[:, :, None] * r[:, None, :])


def flat_stats(q, k, rel_q, rel_k):
    """Batch mean and biased variance per head of x0, x1, x2, (3, g) each, from sums and Gram
    matrices: sum_ij (q_i.k_j)^2 = <q q^T, k k^T> and sum_ij (q_i.r_o)^2 = sum_i q_i^T (sum_o r_o r_o^T) q_i.
    Computed in float64, where E[x^2] - E[x]^2 loses nothing that matters."""
    N, g, c, L = q.shape
    q, k, rel_q, rel_k = (t.double() for t in (q, k, rel_q, rel_k))
    sums = [(q.sum(-1) * k.sum(-1)).sum(-1)]
    squares = [((q @ q.transpose(-1, -2)) * (k @ k.transpose(-1, -2))).sum((-1, -2))]
    for feat, rel in ((q, rel_q), (k, rel_k)):  # the key term is the query term transposed
        sums.append((feat * _query_windows(rel.t()).t()).sum((2, 3)))
        squares.append((_per_query(_offset_gram(rel), feat) * feat).sum((2, 3)))
    n = N * L * L
    mean = torch.stack(sums).sum(1) / n
    var = (torch.stack(squares).sum(1) / n - mean.square()).clamp_min(0)
    return mean, var


# ------------------------------------------------------------------------------ the function

class _Work:
    """Buffers of one chunk: S (n, g, L, L), R (n, g, L, 2L-1) for products with a table, and U
    (n, g, L, 2L-1) holding an (L x L) matrix along its offsets (zero outside the band)."""

    def __init__(self, n, g, L, like):
        self.S = like.new_empty(n, g, L, L)
        self.R = like.new_empty(n, g, L, 2 * L - 1)
        self.U = like.new_zeros(n, g, L, 2 * L - 1)

    def logits(self, qa0, k, qa1, ka2, rq, rk):
        """sum_t a_t x_t for one chunk (the scales a_t already applied to the features), in S.
        rq, rk: the tables flipped to key-minus-query order."""
        n = k.shape[0]
        S = torch.matmul(qa0.transpose(-1, -2), k, out=self.S[:n])
        S += skew(torch.matmul(qa1.transpose(-1, -2), rq, out=self.R[:n]))
        S += skew(torch.matmul(ka2.transpose(-1, -2), rk, out=self.R[:n])).transpose(-1, -2)
        return S

    def along_offsets(self, M):
        return unskew(M, out=self.U[:M.shape[0]])


def chunk_budget(device: torch.device) -> int:
    """Bytes one work buffer of a chunk may take on `device` (see CHUNK_BYTES)."""
    if device.type != "cuda":
        return CHUNK_BYTES
    if torch.compiler.is_compiling():  # no runtime query in a traced graph: assume half the memory is free
        free = torch.cuda.get_device_properties(device).total_memory // 2
    else:
        free, _ = torch.cuda.mem_get_info(device)
    return max(CHUNK_BYTES, int(free * CUDA_FREE_SHARE))


def chunks(N, g, L, itemsize, device):
    """[(start, end)] sample ranges for a batch of N, and the largest chunk's size."""
    step = max(1, chunk_budget(device) // (g * L * (2 * L - 1) * itemsize))
    return [(s, min(s + step, N)) for s in range(0, N, step)], min(step, N)


def update_running_stats(bn, mean, var, n):
    """Fold batch statistics (per-channel mean and biased variance over n values) into `bn`'s
    running ones as `nn.BatchNorm` does; nothing when it keeps none or its momentum is 0."""
    if bn.running_mean is None or bn.momentum == 0:
        return
    m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked + 1)
    bn.running_mean.mul_(1 - m).add_(mean.flatten().to(bn.running_mean.dtype), alpha=m)
    bn.running_var.mul_(1 - m).add_((var * (n / max(n - 1, 1))).flatten().to(bn.running_var.dtype), alpha=m)
    bn.num_batches_tracked.add_(1)


def _batchnorm_stats(bn, q, k, rel_q, rel_k):
    """(mean, inv_std), (3, g): batch statistics in training (running ones updated as
    `nn.BatchNorm2d` does), the running ones otherwise."""
    g = q.shape[1]
    if not (bn.training or bn.running_mean is None):
        return bn.running_mean.view(3, g).to(q.dtype), torch.rsqrt(bn.running_var.view(3, g) + bn.eps).to(q.dtype)
    mean, var = flat_stats(q, k, rel_q, rel_k)
    update_running_stats(bn, mean, var, q.shape[0] * q.shape[-1] ** 2)
    return mean.to(q.dtype), torch.rsqrt(var + bn.eps).to(q.dtype)


def _qkv_batchnorm(bn, x):
    """bn(x) exactly as `nn.BatchNorm1d.forward` computes it (running statistics and
    num_batches_tracked updated the same way), in x's dtype (a bfloat16 network's BatchNorm is
    computed in float32 here), also returning the (mean, inv_std) it used."""
    weight, bias, running_mean, running_var = (t if t is None else t.to(x.dtype)  # the same tensor in x's dtype
                                               for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var))
    if not (bn.training or bn.running_mean is None):  # eval: the running statistics
        inv_std = torch.rsqrt(running_var + bn.eps)
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, bn.eps), running_mean, inv_std
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    out = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, bn.eps)
    for own, updated in ((bn.running_mean, running_mean), (bn.running_var, running_var)):
        if own is not updated:  # updated in a copy of another dtype
            own.copy_(updated)
    return out


def _split_qkv(x, mean, inv_std, w, b, g, split):
    """Normalised (N, C, L) -> q, k, v views (N, g, c, L)."""
    scale = inv_std * w if w is not None else inv_std
    shift = (b if b is not None else 0) - mean * scale
    qkv = torch.addcmul(shift.view(1, -1, 1), x, scale.view(1, -1, 1))
    return torch.split(qkv.view(x.shape[0], g, -1, x.shape[-1]), split, dim=2)


class FlatAttention(torch.autograd.Function):
    """(qkv before its BatchNorm (N, 2C, L), tables) -> (sv, sve), both (N, g, cv, L):
    sv = v P^T and sve[:, i] = sum_j P_ij r_v[i - j + L - 1], P = softmax(sum_t BN_t(x_t)), with
    q, k, v the heads of BN_qkv(qkv).

    `bn_qkv` and `bn` (the similarity BatchNorm, 3g channels: the terms, then the heads) are the
    modules, for their statistics; their weights and biases are passed separately so that they
    receive gradients. Saves the qkv BatchNorm's *input* (its output is recomputed in backward, one
    cheap pass), the tables and the statistics.
    """

    @staticmethod
    def forward(ctx, bn_qkv, bn, qkv_weight, qkv_bias, weight, bias, x, g, split, rel_q, rel_k, rel_v):
        ctx.dtypes = [t.dtype for t in (x, rel_q, rel_k, rel_v)]
        x, rel_q, rel_k, rel_v = promote([x, rel_q, rel_k, rel_v])
        with no_autocast(x), torch.no_grad():
            qkv, qkv_mean, qkv_inv_std = _qkv_batchnorm(bn_qkv, x)
            q, k, v = torch.split(qkv.view(x.shape[0], g, -1, x.shape[-1]), split, dim=2)
        N, g, c, L = q.shape
        cv = v.shape[2]
        ctx.training = bn.training or bn.running_mean is None
        with no_autocast(q):
            mean, inv_std = _batchnorm_stats(bn, q, k, rel_q, rel_k)
            a = inv_std * (weight.view(3, g).to(q.dtype) if weight is not None else 1)
            spans, step = chunks(N, g, L, q.element_size(), q.device)
            work = _Work(step, g, L, q)
            rq, rk, rv = rel_q.flip(-1), rel_k.flip(-1), rel_v.flip(-1).t()
            sv, sve_t = v.new_empty(N, g, cv, L), v.new_empty(N, g, L, cv)
            for s, e in spans:
                S = work.logits(q[s:e] * a[0].view(1, g, 1, 1), k[s:e], q[s:e] * a[1].view(1, g, 1, 1),
                                k[s:e] * a[2].view(1, g, 1, 1), rq, rk)
                p = S.softmax(dim=-1)
                torch.matmul(v[s:e], p.transpose(-1, -2), out=sv[s:e])
                torch.matmul(work.along_offsets(p), rv, out=sve_t[s:e])
                del p
        ctx.has_weight, ctx.g, ctx.split = weight is not None, g, split
        ctx.qkv_training = bn_qkv.training or bn_qkv.running_mean is None
        ctx.save_for_backward(mean, inv_std, a, x, qkv_mean, qkv_inv_std,
                              *(t if t is not None else torch.empty(0) for t in (qkv_weight, qkv_bias)),
                              rel_q, rel_k, rel_v)
        ctx.qkv_affine = (qkv_weight is not None, qkv_bias is not None)
        out = result_dtype(sv, ctx.dtypes[0])
        return sv.to(out), sve_t.transpose(-1, -2).to(out)

    @staticmethod
    def backward(ctx, dsv, dsve):
        mean, inv_std, a, x, qkv_mean, qkv_inv_std, qkv_w, qkv_b, rel_q, rel_k, rel_v = ctx.saved_tensors
        qkv_w = qkv_w if ctx.qkv_affine[0] else None
        qkv_b = qkv_b if ctx.qkv_affine[1] else None
        with no_autocast(x):
            q, k, v = _split_qkv(x, qkv_mean, qkv_inv_std, qkv_w, qkv_b, ctx.g, ctx.split)
        N, g, c, L = q.shape
        cv = v.shape[2]
        with no_autocast(q):
            dsv, dsve_t = dsv.to(v.dtype), dsve.to(v.dtype).transpose(-1, -2)  # (N, g, L, cv)
            spans, step = chunks(N, g, L, q.element_size(), q.device)
            work = _Work(step, g, L, q)
            rq, rk, rv = rel_q.flip(-1), rel_k.flip(-1), rel_v.flip(-1)
            dv = torch.empty_like(v)
            raw_q = [q.new_empty(N, g, c, L), q.new_empty(N, g, L, c)]  # d<dS, x_t>/dq for x0, x1
            raw_k = [q.new_empty(N, g, c, L), q.new_empty(N, g, L, c)]  # ... /dk for x0, x2
            drv, table_q, table_k = rel_v.new_zeros(cv, 2 * L - 1), rel_q.new_zeros(c, 2 * L - 1), rel_k.new_zeros(c, 2 * L - 1)
            dS_sum = q.new_zeros(g)
            qa1, ka2 = q * a[1].view(1, g, 1, 1), k * a[2].view(1, g, 1, 1)
            for s, e in spans:
                S = work.logits(q[s:e] * a[0].view(1, g, 1, 1), k[s:e], qa1[s:e], ka2[s:e], rq, rk)
                p = S.softmax(dim=-1)
                dp = torch.matmul(dsv[s:e].transpose(-1, -2), v[s:e], out=work.S[:e - s])  # S is spent
                torch.matmul(dsv[s:e], p, out=dv[s:e])
                dp += skew(torch.matmul(dsve_t[s:e], rv, out=work.R[:e - s]))
                U = work.along_offsets(p)
                drv += dsve_t[s:e].reshape(-1, cv).t() @ U.reshape(-1, 2 * L - 1)
                dS = dp.sub_(torch.linalg.vecdot(dp, p).unsqueeze(-1)).mul_(p)  # softmax backward
                del p
                dS_sum += dS.sum(dim=(0, 2, 3))
                torch.matmul(k[s:e], dS.transpose(-1, -2), out=raw_q[0][s:e])
                torch.matmul(q[s:e], dS, out=raw_k[0][s:e])
                U = work.along_offsets(dS)
                torch.matmul(U, rq.t(), out=raw_q[1][s:e])
                table_q += qa1[s:e].transpose(2, 3).reshape(-1, c).t() @ U.reshape(-1, 2 * L - 1)
                U = work.along_offsets(dS.transpose(-1, -2))  # the key term is the query term transposed
                torch.matmul(U, rk.t(), out=raw_k[1][s:e])
                table_k += ka2[s:e].transpose(2, 3).reshape(-1, c).t() @ U.reshape(-1, 2 * L - 1)
            del work
            raw_q[1], raw_k[1] = raw_q[1].transpose(-1, -2), raw_k[1].transpose(-1, -2)
            dq, dk, drq, drk, dw = _correct(raw_q, raw_k, table_q.flip(-1), table_k.flip(-1), dS_sum,
                                            q, k, rel_q, rel_k, mean, inv_std, a, ctx.training)
            del q, k, v
            dy = torch.cat([dq, dk, dv], dim=2).view_as(x)  # gradient of the normalised qkv
            dx, dqkv_w, dqkv_b = _batchnorm_backward(dy, x, qkv_mean, qkv_inv_std, qkv_w, ctx.qkv_training)
        need = ctx.needs_input_grad
        grads = [t.to(dt) if n else None for t, dt, n in
                 zip((dx, drq, drk, drv.flip(-1)), ctx.dtypes, (need[6], *need[9:]), strict=False)]
        return (None, None, dqkv_w if need[2] else None, dqkv_b if need[3] else None,
                dw if ctx.has_weight and need[4] else None, dS_sum.repeat(3) if need[5] else None,
                grads[0], None, None, *grads[1:])


def _batchnorm_backward(dy, x, mean, inv_std, weight, training):
    """BatchNorm1d backward over (N, C, L) -> (dx, dweight, dbias)."""
    n = x.shape[0] * x.shape[2]
    xhat = (x - mean.view(1, -1, 1)).mul_(inv_std.view(1, -1, 1))
    dbias = dy.sum(dim=(0, 2))
    dweight = torch.linalg.vecdot(dy, xhat).sum(0)
    coef = (inv_std * weight if weight is not None else inv_std).view(1, -1, 1)
    if training:  # batch statistics: remove the mean and the projection on xhat
        dx = (dy - (dbias / n).view(1, -1, 1)).sub_(xhat.mul_((dweight / n).view(1, -1, 1))).mul_(coef)
    else:
        dx = dy * coef
    return dx, dweight, dbias


def _correct(raw_q, raw_k, table_q, table_k, dS_sum, q, k, rel_q, rel_k, mean, inv_std, a, training):
    """The term gradients from the gradient of their normalised sum, given the parts linear in dS.

    The BatchNorm gradient of term t is dx_t = a_t (dS - alpha_t - beta_t x_t) with per-head
    scalars, and the term gradients are linear in dx_t. `raw_*` hold d<dS, x_t>/dfeature and
    `table_*` sum_(n,g) a_t,g d<dS, x_t>/dtable (official offset order). The parts with x_t itself
    have closed forms in (c x c) Gram matrices: for x0 = q^T k, d<x0, x0>/2dq = (k k^T) q; for x1,
    query i meets the offsets i..i+L-1, so it is (sum of r_o r_o^T over those) q_i, and the table's
    part collects sum q_i q_i^T over the queries meeting each offset. No (L x L) term is recomputed.
    Returns dq, dk, drel_q, drel_k and the BatchNorm weight gradient (3g).
    """
    N, g, c, L = q.shape
    n = N * L * L
    dots = torch.stack([torch.linalg.vecdot(q, raw_q[0], dim=2).sum((0, 2)),  # <dS, x_t> per head
                        torch.linalg.vecdot(q, raw_q[1], dim=2).sum((0, 2)),
                        torch.linalg.vecdot(k, raw_k[1], dim=2).sum((0, 2))])
    dweight = inv_std * (dots - mean * dS_sum)  # <dS, xhat_t>
    if training:  # batch statistics: remove the mean and the projection on xhat
        beta = inv_std * dweight / n
        alpha = dS_sum / n - beta * mean
    else:
        alpha = beta = torch.zeros_like(mean)

    def per_head(x):
        return x.view(1, g, 1, 1)

    def feat_grad(t, raw, feat, other, rel):  # a_t (G(dS) - alpha_t G(1) - beta_t G(x_t))
        if t == 0:  # x0 = q^T k: G(1) sums the other feature, G(x0) = (other other^T) feat
            ones, own = other.sum(-1, keepdim=True), (other @ other.transpose(-1, -2)) @ feat
        else:
            ones, own = _query_windows(rel.t()).t(), _per_query(_offset_gram(rel), feat)
        return per_head(a[t]) * (raw - per_head(alpha[t]) * ones - per_head(beta[t]) * own)

    def table_grad(t, raw, feat, rel):  # raw - sum_(n,g,i) a_t (alpha_t + beta_t x_t[i, j]) feat_i per offset
        ones = _offset_windows((feat * per_head(a[t] * alpha[t])).sum((0, 1)).t()).t()  # (c, 2L-1)
        weighted = (feat * per_head(a[t] * beta[t])).permute(3, 0, 1, 2).reshape(L, N * g, c)
        gram = _offset_windows(feat.permute(3, 2, 0, 1).reshape(L, c, N * g) @ weighted)  # (2L-1, c, c)
        return raw - ones - torch.linalg.vecdot(gram, rel.t()[:, None, :]).t()

    dq = feat_grad(0, raw_q[0], q, k, None) + feat_grad(1, raw_q[1], q, None, rel_q)
    dk = feat_grad(0, raw_k[0], k, q, None) + feat_grad(2, raw_k[1], k, None, rel_k)
    return dq, dk, table_grad(1, table_q, q, rel_q), table_grad(2, table_k, k, rel_k), dweight.flatten()

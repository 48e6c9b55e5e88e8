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

The attention itself (the binary term's similarity, softmax and aggregation, with its lean,
folded and reference paths, ``impl``) is `attnzoo.ops.lesa.lesa_attention`; this module holds the
parameters, the unary term, the fusion and the resampling of the tables.

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
from timm.layers import register_notrace_function
from torch import nn

from ..errors import UserError
from ..ops.lesa import attention_probabilities, check_options, lesa_attention
from ._checks import check_channels, check_input

torch.fx.wrap("lesa_attention")  # a leaf for every torch.fx tracer (torchvision's too), not only timm's


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
        impl: ``lean`` (default) or ``reference`` (see `attnzoo.ops.lesa`).

    Shapes: (N, in_planes, H, W) with (H, W) == fmap_size -> (N, out_planes, H // stride, W // stride).
    """

    attention_kind = "global"  # for attnzoo.analysis: attention_weights gives the binary term's

    def __init__(self, in_planes: int, out_planes: int | None = None, fmap_size=14, stride: int = 1,
                 groups: int = 8, pe_type: str = "classification", df_channel_shrink=(2,),
                 df_kernel_size=(1, 1), df_group=(1, 1), with_cp: bool = False, impl: str = "lean"):
        super().__init__()
        out_planes = in_planes if out_planes is None else out_planes
        check_channels("LESA", in_planes=in_planes, out_planes=out_planes, groups=groups)
        if in_planes % groups or out_planes % (2 * groups):
            raise UserError(f"LESA: channels in={in_planes}, out={out_planes} do not fit groups={groups}; "
                            f"in_planes must be divisible by groups and out_planes by 2*groups={2 * groups}")
        check_options(pe_type, impl)
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
        self.split = [self.qk_planes, self.qk_planes, self.v_planes]  # q, k, v channels per head
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
        for shrink, ks, grp in zip(df_channel_shrink, df_kernel_size, df_group, strict=False):
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
        x = check_input("LESA", x, self.in_planes)
        x = check_fmap_size(x, self.fmap_size)
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        if use_cp:
            ctx = lambda: (contextlib.nullcontext(), _frozen_bn_stats(self))  # noqa: E731
            unary = checkpoint.checkpoint(self._unary, x, use_reentrant=False, context_fn=ctx)
            binary = checkpoint.checkpoint(self._binary, x.flatten(2), use_reentrant=False, context_fn=ctx)
        else:
            unary = self._unary(x)
            binary = self._binary(x.flatten(2))                  # (N, C_in, L) -> (N, out_planes, L)
        binary = binary.view_as(unary)                           # (N, out_planes, H, W)
        gate = torch.sigmoid(self.projection(self.reasoning(torch.cat([unary, binary], dim=1))))
        return self.pooling(gate * binary + unary)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The binary term's attention p = softmax(sum_t BN_t(term_t)) with the similarity
        BatchNorm's running statistics: (N, C, H, W) -> (N, groups, HW, HW), rows sum to 1.
        For analysis: it materialises one HW x HW map per head."""
        N, C, H, W = check_fmap_size(x, self.fmap_size).shape
        qkv = self.bn_qkv(self.qkv_transform(x.reshape(N, C, H * W))).view(N, self.groups, -1, H * W)
        q, k, _ = torch.split(qkv, self.split, dim=2)
        return attention_probabilities(q, k, self.bn_similarity, self.pe_type, self._pe())

    def _unary(self, x):
        return self.bn_x(self.x_transform(x))

    def _binary(self, x):
        """(N, C_in, L) -> (N, out_planes, L)."""
        return lesa_attention(self.qkv_transform(x), self.bn_qkv, self.bn_similarity, self.bn_output, self.groups,
                              self.split, self.pe_type, self._pe(), self.impl)

    def _pe(self):
        """The position embedding as `attnzoo.ops.lesa_attention` takes it."""
        if self.pe_type == "classification":
            return (self.relative, self.flat_index)
        return (self.rel_height, self.rel_width, self.index_h, self.index_w)


@register_notrace_function  # a data-dependent check: a leaf when FX traces the block
@torch.fx.wrap
def check_fmap_size(x: torch.Tensor, fmap_size: tuple[int, int]) -> torch.Tensor:
    """x, unless its (H, W) is not the one a block was built for (UserError). Returning x keeps the
    check in traced graphs, whose dead-code elimination drops calls whose result is unused."""
    if tuple(x.shape[-2:]) != tuple(fmap_size):
        raise UserError(f"LESA block built for {fmap_size[0]}x{fmap_size[1]} feature maps got "
                        f"{x.shape[-2]}x{x.shape[-1]}; build it for this size: an inserted block with fmap_size="
                        f"{x.shape[-1]} (model.attn_kwargs, with model.attn_stages naming stages of "
                        "that size), a LESA network with img_size=...")
    return x


def lesa_block(channels: int, **kwargs) -> LESA:
    """A LESA block mapping C -> C channels, for the block factory (`create_block('lesa', C, fmap_size=...)`)."""
    return LESA(channels, channels, **kwargs)

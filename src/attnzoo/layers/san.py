"""SAN's self-attention module (SAM) and bottleneck, as in hszhao/SAN `model/san.py`.

Paper: Zhao, Jia, Koltun, "Exploring Self-attention for Image Recognition", CVPR 2020.
Faithful to the official implementation: same submodule names and parameter shapes (so the
released checkpoints load after `attnzoo convert --from san-official`), reflection padding,
`C/share` attention weights shared by every `share`-th channel (channel c uses weight c % (C/share)).
The local operators come from `attnzoo.ops` (backend selectable, default 'auto').

One deliberate difference: the official patchwise SAM reshapes with the *input* resolution, so it
only works at stride 1 (which is all the official networks use); here stride > 1 works too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from ..errors import UserError, choices_hint
from ..ops import (  # FX leaves: module globals, so timm's tracer wraps them
    aggregation,
    subtraction,
    subtraction2,
)
from ._checks import check_channels, check_input

# torch.fx leaves for every tracer (torchvision's feature extraction too), not only timm's
torch.fx.wrap("aggregation"), torch.fx.wrap("subtraction"), torch.fx.wrap("subtraction2")

SA_TYPES = {"pairwise": 0, "patchwise": 1}


def sa_type_name(sa_type) -> str:
    """'pairwise' or 'patchwise'; the official integers 0 and 1 are accepted too."""
    if not isinstance(sa_type, str) and sa_type in (0, 1):
        return ("pairwise", "patchwise")[int(sa_type)]
    if sa_type not in SA_TYPES:
        raise UserError(f"unknown SAN attention type {sa_type!r}; {choices_hint(str(sa_type), SA_TYPES)}")
    return sa_type


@register_notrace_function  # sizes read from x: a leaf when FX traces SAM
@torch.fx.wrap
def position_grid(like: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (1, 2, H, W): normalised x (channel 0) and y (channel 1) coordinates in [-1, 1]."""
    height, width = like.shape[-2], like.shape[-1]
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)]).unsqueeze(0)


class SAM(nn.Module):
    """Self-attention module: (N, in_planes, H, W) -> (N, out_planes, Ho, Wo).

    pairwise: weights from relation(x1_i, x2_j) = x1_i - x2_j (subtraction) plus a learned encoding
    of the position difference, softmax over the k*k neighbours; patchwise: weights from the
    concatenated patch [x1_i, x2_j for j in window], no softmax. Both aggregate conv3(x) with
    out_planes/share_planes weight channels.
    """

    attention_kind = "local"  # for attnzoo.analysis: attention_weights gives the local weights

    def __init__(self, sa_type, in_planes: int, rel_planes: int, out_planes: int, share_planes: int,
                 kernel_size: int = 3, stride: int = 1, dilation: int = 1, backend: str = "auto"):
        super().__init__()
        check_channels("SAM", in_planes=in_planes, rel_planes=rel_planes, out_planes=out_planes,
                       share_planes=share_planes)
        self.in_planes = in_planes
        self.sa_type = sa_type_name(sa_type)
        if out_planes % share_planes:
            raise UserError(f"SAM: out_planes={out_planes} must be divisible by share_planes={share_planes}")
        self.kernel_size, self.stride, self.dilation, self.backend = kernel_size, stride, dilation, backend
        self.padding = (dilation * (kernel_size - 1) + 1) // 2
        k2 = kernel_size * kernel_size
        self.conv1 = nn.Conv2d(in_planes, rel_planes, kernel_size=1)
        self.conv2 = nn.Conv2d(in_planes, rel_planes, kernel_size=1)
        self.conv3 = nn.Conv2d(in_planes, out_planes, kernel_size=1)
        if self.sa_type == "pairwise":
            self.conv_w = nn.Sequential(
                nn.BatchNorm2d(rel_planes + 2), nn.ReLU(inplace=True),
                nn.Conv2d(rel_planes + 2, rel_planes, kernel_size=1, bias=False),
                nn.BatchNorm2d(rel_planes), nn.ReLU(inplace=True),
                nn.Conv2d(rel_planes, out_planes // share_planes, kernel_size=1))
            self.conv_p = nn.Conv2d(2, 2, kernel_size=1)
        else:
            self.conv_p = None  # no position encoding (None, not absent: TorchScript then skips that branch)
            self.conv_w = nn.Sequential(
                nn.BatchNorm2d(rel_planes * (k2 + 1)), nn.ReLU(inplace=True),
                nn.Conv2d(rel_planes * (k2 + 1), out_planes // share_planes, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_planes // share_planes), nn.ReLU(inplace=True),
                nn.Conv2d(out_planes // share_planes, k2 * out_planes // share_planes, kernel_size=1))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_planes, H, W) -> (N, out_planes/share, k*k, Ho*Wo)."""
        N = x.shape[0]
        x1, x2 = self.conv1(x), self.conv2(x)
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        k2 = k * k
        if self.conv_p is not None:  # pairwise
            pos = self.conv_p(position_grid(x))                                        # (1, 2, H, W)
            rel = subtraction2(x1, x2, k, s, p, d, "reflect", self.backend)            # (N, rel, k2, L)
            pos = subtraction(pos, k, s, p, d, "reflect", self.backend).expand(N, -1, -1, -1)  # (N, 2, k2, L)
            return torch.softmax(self.conv_w(torch.cat([rel, pos], 1)), dim=-2)       # (N, C/s, k2, L)
        if self.stride != 1:
            x1 = x1[:, :, ::self.stride, ::self.stride]
        L = x1.shape[2] * x1.shape[3]
        x1 = x1.reshape(N, -1, 1, L)                                                    # (N, rel, 1, L)
        pad = self.kernel_size // 2  # the official module pads by k//2 whatever the dilation
        x2 = F.unfold(F.pad(x2, (pad, pad, pad, pad), mode="reflect"), self.kernel_size,
                      dilation=self.dilation, stride=self.stride).view(N, -1, 1, L)    # (N, rel*k2, 1, L)
        return self.conv_w(torch.cat([x1, x2], 1)).view(N, -1, k2, L)                 # (N, C/s, k2, L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input("SAM", x, self.in_planes)
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        # under CUDA autocast the pairwise softmax is float32 and conv3 bf16/fp16: `aggregation` runs in the
        # autocast dtype, casting the weights down (accumulating in float32)
        return aggregation(self.conv3(x), self.attention_weights(x), k, s, p, d, "reflect", self.backend)


class SANBottleneck(nn.Module):
    """Pre-activation residual block: x + conv1x1(relu(bn2(SAM(relu(bn1(x)))))).

    (N, in_planes, H, W) -> (N, out_planes, H, W); in_planes == out_planes (identity shortcut).
    """

    def __init__(self, sa_type, in_planes: int, rel_planes: int, mid_planes: int, out_planes: int,
                 share_planes: int = 8, kernel_size: int = 7, stride: int = 1, backend: str = "auto"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.sam = SAM(sa_type, in_planes, rel_planes, mid_planes, share_planes, kernel_size, stride,
                       backend=backend)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv = nn.Conv2d(mid_planes, out_planes, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        out = self.relu(self.bn2(self.sam(out)))
        return self.conv(out) + x

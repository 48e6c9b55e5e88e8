"""ECA and CBAM as sigmoid gates whose logit is a method, for LSAS's sub-attention.

LSAS needs the channel logit z of its base attention, before the sigmoid. timm's `EcaModule`
and `CbamModule` compute it inside their forward only, so these are own implementations of the
same functions with timm's parameter names, shapes and construction order (timm's weights load
into them, the same seed initialises them the same way); `tests/layers/test_gates.py` checks
them against timm's modules. CBAM's spatial gate is timm's `SpatialAttn`, used through its
forward.

- ECA (Wang et al., CVPR 2020): z = conv1d over the channel axis of the pooled features, kernel
  size from the channel count, |log2(C)/gamma + beta/gamma| rounded up to odd, at least 3 (as
  timm: an explicit `kernel_size` counts only without `channels`).
- CBAM (Woo et al., ECCV 2018): z = fc2(act(fc1(avgpool x))) + fc2(act(fc1(maxpool x))), 1x1
  convolutions (timm's `ChannelAttn`); then the spatial gate.

Shapes: x (N, C, H, W) -> (N, C, H, W); logit (N, C, 1, 1).
"""
import math

import torch
from timm.layers import create_act_layer, make_divisible
from timm.layers.cbam import SpatialAttn
from torch import nn


def eca_kernel_size(channels, kernel_size: int = 3, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel size for `channels` (`kernel_size` when channels is None)."""
    if channels is None:
        return kernel_size
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EcaGate(nn.Module):
    """ECA; parameters `conv.weight` (1, 1, k), as timm's `EcaModule`."""

    def __init__(self, channels=None, kernel_size: int = 3, gamma: float = 2, beta: float = 1,
                 gate_layer="sigmoid"):
        super().__init__()
        k = eca_kernel_size(channels, kernel_size, gamma, beta)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> z, (N, C, 1, 1)."""
        y = self.conv(x.mean((2, 3))[:, None, :])       # (N, 1, C)
        return y[:, 0, :, None, None]                    # (N, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.logit(x))


class ChannelMlp(nn.Module):
    """CBAM's shared MLP on the pooled features: fc1 (1x1 conv), act, fc2."""

    def __init__(self, channels: int, rd_channels: int, act_layer=nn.ReLU, mlp_bias: bool = False):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=mlp_bias)
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=mlp_bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(pooled)))      # (N, C, 1, 1) -> (N, C, 1, 1)


class CbamGate(nn.Module):
    """CBAM; parameters `channel.fc1/fc2.*` and `spatial.conv.*`, as timm's `CbamModule`."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels=None, rd_divisor: int = 1,
                 spatial_kernel_size: int = 7, act_layer=nn.ReLU, gate_layer="sigmoid", mlp_bias: bool = False):
        super().__init__()
        rd = rd_channels or make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.channel = ChannelMlp(channels, rd, act_layer, mlp_bias)
        self.spatial = SpatialAttn(spatial_kernel_size)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the channel gate's z, (N, C, 1, 1)."""
        return self.channel(x.mean((2, 3), keepdim=True)) + self.channel(x.amax((2, 3), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(x * torch.sigmoid(self.logit(x)))

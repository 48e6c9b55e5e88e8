"""Shift-and-Balance attention (arXiv 2103.13080) and the SE variant of its reference code.

Both pool x to (N, C) and run the same small network over it,

    A(x) = act(BN(fc2(relu(BN(fc1(mean_hw(x))))))),   hidden width int(rd_ratio · C),

and then combine differently:

- `ShiftBalance` (SB): y = x + λ · A(x) with a per-channel λ (drawn from N(0, 1), shape (1, C))
  and act one of tanh, sigmoid, relu, softmax (over channels), linear (the seed's ablation).
- `BNSqueezeExcite`: y = x · σ(A(x)), the SE the SB seed compares against (with BatchNorm1d,
  unlike the LSAS seed's `attnzoo.layers.se.SE`).

As in the seed's `weights_init`, the Linear and BatchNorm1d weights start from N(0, 0.02) and the
biases from 0 (`init_std=None` keeps PyTorch's defaults instead).

Unlike the reference (which `squeeze()`s the pooled vector), batch size 1 works; in training mode
BatchNorm1d still needs more than one sample for batch statistics, so use eval mode there.

Shapes: x (N, C, H, W) -> (N, C, H, W).
"""
import torch
from torch import nn

from ..errors import UserError, choices_hint
from ._checks import check_channels, check_input
from .se import hidden_channels, rd_ratio_of

ACTIVATIONS = ("tanh", "sigmoid", "relu", "softmax", "linear")


def _activation(name: str) -> nn.Module:
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "relu":
        return nn.ReLU()
    if name == "softmax":
        return nn.Softmax(dim=1)  # over channels of the (N, C) vector
    if name == "linear":
        return nn.Identity()
    raise UserError(f"Shift-and-Balance: unknown activation '{name}'; {choices_hint(name, ACTIVATIONS)}")


class _PooledMLP(nn.Module):
    """mean_hw -> fc1 -> BN1d -> relu -> fc2 -> BN1d -> act; (N, C, H, W) -> (N, C)."""

    attention_kind = "channel"  # for attnzoo.analysis: see attention_weights

    def __init__(self, channels: int, rd_ratio: float, rd_channels, rd_divisor: int, activation: str, init_std,
                 what: str):
        super().__init__()
        check_channels(what, channels=channels)
        self.channels, self.what = channels, what
        hidden = hidden_channels(channels, rd_ratio, rd_channels, rd_divisor, "floor", what)  # the seed's int()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.bn2 = nn.BatchNorm1d(channels)
        self.act = _activation(activation)
        if init_std is not None:
            for m in (self.fc1, self.bn1, self.fc2, self.bn2):
                nn.init.normal_(m.weight, 0.0, init_std)
                nn.init.zeros_(m.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        a = x.mean((2, 3))                              # (N, C); flatten keeps N = 1 intact
        a = self.relu(self.bn1(self.fc1(a)))            # (N, hidden)
        return self.act(self.bn2(self.fc2(a)))          # (N, C)


class ShiftBalance(_PooledMLP):
    """SB attention: y = x + λ · A(x).

    Args:
        channels: C of the input.
        rd_ratio: hidden width int(rd_ratio · C) (0.5 in the seed).
        activation: tanh (the seed's default), sigmoid, relu, softmax or linear.
        init_std: std of the seed's N(0, std) init of Linear/BatchNorm1d weights (None: PyTorch's).
        rd_channels, rd_divisor: explicit hidden width / hidden width a multiple of rd_divisor (1).
        ratio: deprecated name of rd_ratio.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, rd_ratio: float = 0.5, activation: str = "tanh", init_std=0.02,
                 rd_channels=None, rd_divisor: int = 1, ratio=None):
        what = "Shift-and-Balance"
        super().__init__(channels, rd_ratio_of(what, rd_ratio, ratio=ratio), rd_channels, rd_divisor, activation,
                         init_std, what)
        self.lam = nn.Parameter(torch.randn(1, channels))   # λ, per channel

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the shift λ·A(x) added to every position, (N, C)."""
        return self.lam * self.attention(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(self.what, x, self.channels)
        return x + self.attention_weights(x)[:, :, None, None]


class BNSqueezeExcite(_PooledMLP):
    """The SB seed's SE: y = x · σ(A(x)) with BatchNorm1d in the MLP.

    Args:
        channels: C of the input.
        rd_ratio: hidden width int(rd_ratio · C) (0.5 in the seed).
        init_std, rd_channels, rd_divisor, ratio: as for `ShiftBalance`.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, rd_ratio: float = 0.5, init_std=0.02, rd_channels=None, rd_divisor: int = 1,
                 ratio=None):
        what = "SE (BatchNorm)"
        super().__init__(channels, rd_ratio_of(what, rd_ratio, ratio=ratio), rd_channels, rd_divisor, "sigmoid",
                         init_std, what)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the gate σ(A(x)), (N, C)."""
        return self.attention(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(self.what, x, self.channels)
        return x * self.attention(x)[:, :, None, None]

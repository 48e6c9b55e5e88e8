"""Squeeze-and-excitation (Hu et al., 2018) in the layout of the LSAS seed.

The gate is σ(z) with the logit z = fc2(relu(fc1(avgpool(x)))), two `nn.Linear` layers with bias
and `rd_channels` hidden units. Hidden widths use timm's vocabulary (`rd_ratio`, `rd_channels`,
`rd_divisor`, see `hidden_channels`). The LSAS seed sizes the hidden layer two ways, both covered
by `rounding`:

- CIFAR networks (`cifar/senet.py`, `cifar/lsas_senet.py`): `round(channels / 16)` ('round');
- ImageNet networks (`imagenet/*.py`): `channels // 16` ('floor').

They agree whenever `channels` is a multiple of 16, as in every network of the seed.

`SE.logit(x)` exposes z so that `attnzoo.layers.lsas.LSAS` can put sub-attention on the gate.

Shapes: x (N, C, H, W) -> (N, C, H, W); logit (N, C, 1, 1).
"""
import warnings
from fractions import Fraction

import torch
from torch import nn

from ..errors import UserError
from ._checks import check_channels, check_input

ROUNDINGS = ("round", "floor")


def hidden_channels(channels: int, rd_ratio=1 / 16, rd_channels=None, rd_divisor: int = 1,
                    rounding: str = "round", what: str = "SE") -> int:
    """Hidden width of a squeeze-excite MLP: `rd_channels`, or channels * rd_ratio rounded per
    `rounding` ('round' to nearest, 'floor' down) to a multiple of `rd_divisor`. UserError when it
    would be zero (or an option is invalid)."""
    if rounding not in ROUNDINGS:
        raise UserError(f"{what}: unknown rounding '{rounding}'; valid: {', '.join(ROUNDINGS)}")
    if rd_channels is None:
        if not rd_ratio > 0:
            raise UserError(f"{what}: rd_ratio must be positive, got {rd_ratio}")
        if isinstance(rd_divisor, bool) or not isinstance(rd_divisor, int) or rd_divisor < 1:
            raise UserError(f"{what}: rd_divisor must be an integer >= 1, got {rd_divisor!r}")
        width = channels * rd_ratio / rd_divisor
        rd_channels = rd_divisor * (round(width) if rounding == "round" else int(width))
    if rd_channels < 1:
        raise UserError(f"{what}: rd_ratio {rd_ratio} leaves {rd_channels} hidden channels for "
                        f"{channels} channels; use rd_ratio >= {1 / channels:.4g} (or rd_channels >= 1)")
    return int(rd_channels)


def rd_ratio_of(what: str, rd_ratio, reduction=None, ratio=None):
    """`rd_ratio`, or the one that a deprecated option names, with a FutureWarning naming rd_ratio:
    `reduction=r` (hidden width C / r) is rd_ratio 1/r, kept exact so that widths do not move;
    `ratio=r` (hidden width C * r) is rd_ratio r."""
    if reduction is not None:
        warnings.warn(f"{what}: reduction={reduction} is deprecated; use rd_ratio=1/{reduction}", FutureWarning,
                      stacklevel=3)
        if not reduction > 0:
            raise UserError(f"{what}: reduction must be positive, got {reduction}")
        return 1 / Fraction(reduction)
    if ratio is not None:
        warnings.warn(f"{what}: ratio={ratio} is deprecated; use rd_ratio={ratio}", FutureWarning, stacklevel=3)
        return ratio
    return rd_ratio


class SE(nn.Module):
    """Squeeze-and-excitation: y = x · σ(fc2(relu(fc1(mean_hw(x))))).

    Args:
        channels: C of the input.
        rd_ratio: hidden width is C * rd_ratio (rounded per `rounding`); default 1/16 as in the seed.
        rd_channels: explicit hidden width (overrides `rd_ratio`).
        rd_divisor: the hidden width is a multiple of this (default 1).
        rounding: 'round' (the seed's CIFAR networks) or 'floor' (its ImageNet networks).
        reduction: deprecated, hidden width C / reduction: use rd_ratio = 1 / reduction.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    attention_kind = "channel"  # for attnzoo.analysis: attention_weights gives the gate

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels=None, rd_divisor: int = 1,
                 rounding: str = "round", reduction=None):
        super().__init__()
        check_channels("SE", channels=channels)
        rd_ratio = rd_ratio_of("SE", rd_ratio, reduction=reduction)
        rd = hidden_channels(channels, rd_ratio, rd_channels, rd_divisor, rounding)
        self.fc1 = nn.Linear(channels, rd)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(rd, channels)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the gate's logit z, (N, C, 1, 1)."""
        z = x.mean((2, 3))                      # (N, C)
        z = self.fc2(self.relu(self.fc1(z)))    # (N, rd) -> (N, C)
        return z[:, :, None, None]              # (N, C, 1, 1)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the gate σ(z), (N, C)."""
        return torch.sigmoid(self.logit(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input("SE", x, self.fc1.in_features)
        return x * torch.sigmoid(self.logit(x))

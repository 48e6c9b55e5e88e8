"""Squeeze-and-excitation (Hu et al., 2018) in the layout of the LSAS seed.

The gate is σ(z) with the logit z = fc2(relu(fc1(avgpool(x)))), two `nn.Linear` layers with bias
and `rd_channels` hidden units. The LSAS seed sizes the hidden layer two ways, both covered by
`rounding`:

- CIFAR networks (`cifar/senet.py`, `cifar/lsas_senet.py`): `round(channels / 16)` ('round');
- ImageNet networks (`imagenet/*.py`): `channels // 16` ('floor').

They agree whenever `channels` is a multiple of 16, as in every network of the seed.

`SE.logit(x)` exposes z so that `attnzoo.layers.lsas.LSAS` can put sub-attention on the gate.

Shapes: x (N, C, H, W) -> (N, C, H, W); logit (N, C, 1, 1).
"""
import torch
from torch import nn

from ..errors import UserError
from ._checks import check_channels, check_input

ROUNDINGS = ("round", "floor")


def hidden_channels(channels: int, reduction: float = 16, rd_channels=None, rounding: str = "round",
                    what: str = "SE") -> int:
    """Hidden width of a squeeze-excite MLP; UserError when it would be zero (or rounding unknown)."""
    if rounding not in ROUNDINGS:
        raise UserError(f"{what}: unknown rounding '{rounding}'; valid: {', '.join(ROUNDINGS)}")
    if rd_channels is None:
        if reduction <= 0:
            raise UserError(f"{what}: reduction must be positive, got {reduction}")
        rd_channels = round(channels / reduction) if rounding == "round" else int(channels // reduction)
    if rd_channels < 1:
        raise UserError(f"{what}: reduction {reduction} leaves {rd_channels} hidden channels for "
                        f"{channels} channels; use a reduction of at most {channels} "
                        f"(or rd_channels >= 1)")
    return int(rd_channels)


class SE(nn.Module):
    """Squeeze-and-excitation: y = x · σ(fc2(relu(fc1(mean_hw(x))))).

    Args:
        channels: C of the input.
        reduction: hidden width is C / reduction (rounded per `rounding`); default 16 as in the seed.
        rd_channels: explicit hidden width (overrides `reduction`).
        rounding: 'round' (the seed's CIFAR networks) or 'floor' (its ImageNet networks).

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    attention_kind = "channel"  # for attnzoo.analysis: attention_weights gives the gate

    def __init__(self, channels: int, reduction: float = 16, rd_channels=None, rounding: str = "round"):
        super().__init__()
        check_channels("SE", channels=channels)
        rd = hidden_channels(channels, reduction, rd_channels, rounding)
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
        check_input("SE", x, self.fc1.in_features)
        return x * torch.sigmoid(self.logit(x))

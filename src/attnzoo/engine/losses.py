"""Training losses by name: `build_loss(name, options, label_smoothing, multilabel)`.

- `auto` (the default of `train.loss`): `ce` for single-label data, `bce` for multi-label data
  (`resolve_loss`).
- `ce`: cross-entropy over class indices (single-label); options: none.
- `bce`: binary cross-entropy with logits over multi-hot targets; options: `reduction`
  ("mean" over all N x C entries, or "sum"), `scale` (a constant factor, default 1).
- `asl`: the asymmetric loss of Ridnik et al. (ICCV 2021) as the IDA/Query2Label code uses it
  (`AsymmetricLossOptimized`); options `gamma_pos` (1), `gamma_neg` (4), `clip` (0.05), `eps`
  (1e-5), `disable_torch_grad_focal_loss` (false), `reduction` ("mean" or "sum"), `scale` (1).
  The IDA seed's setting is gamma_pos=0, gamma_neg=0, clip=0, disable_torch_grad_focal_loss=true
  with reduction="mean", scale=1000 (its loss is -sum / N / C * 1000).

Label smoothing for the multi-label losses moves every target towards 1/2:
t' = t (1 - s) + s / 2. Every loss is computed in float32 (also under autocast) and checks that
the logits and targets agree in shape, so a model whose head has a different class count than the
data fails with one clear line.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, choices_hint

LOSSES = ("ce", "bce", "asl")
REDUCTIONS = ("mean", "sum")


def _check_multilabel(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape:
        raise UserError(f"the model gives class scores of shape {tuple(logits.shape)} but the "
                        f"multi-label targets have shape {tuple(targets.shape)}: the head's class "
                        "count must equal the dataset's (set model.kwargs.num_classes)")


def _smooth(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    return targets * (1 - smoothing) + smoothing / 2 if smoothing else targets


def _reduce(loss: torch.Tensor, reduction: str, scale: float) -> torch.Tensor:
    out = loss.sum() if reduction == "sum" else loss.mean()
    return out * scale if scale != 1 else out


class BCELoss(nn.Module):
    """Binary cross-entropy with logits. (N, C) logits, (N, C) multi-hot targets -> scalar."""

    def __init__(self, reduction: str = "mean", scale: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.reduction, self.scale, self.label_smoothing = reduction, float(scale), label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_multilabel(logits, targets)
        t = _smooth(targets.float(), self.label_smoothing)
        loss = F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
        return _reduce(loss, self.reduction, self.scale)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss for multi-label classification.

    p = sigmoid(logit); p_neg = min(1 - p + clip, 1) (probability shifting, clip > 0 only);
    L = -[t log(max(p, eps)) (1 - p)^gamma_pos + (1 - t) log(max(p_neg, eps)) p_m^gamma_neg],
    where the focusing weights use pt = p t + p_neg (1 - t): w = (1 - pt)^(gamma_pos t +
    gamma_neg (1 - t)). With `disable_torch_grad_focal_loss` the weight w is a constant for the
    backward pass. The focusing is skipped entirely when both gammas are 0 (plain clamped BCE).
    (N, C) logits and (N, C) targets -> scalar ("mean" over N x C or "sum", times `scale`).
    """

    def __init__(self, gamma_pos: float = 1.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 eps: float = 1e-5, disable_torch_grad_focal_loss: bool = False,
                 reduction: str = "mean", scale: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        if gamma_pos < 0 or gamma_neg < 0 or (clip is not None and clip < 0) or eps <= 0:
            raise UserError("asl: gamma_pos, gamma_neg and clip must be >= 0 and eps > 0, got "
                            f"{gamma_pos}, {gamma_neg}, {clip}, {eps}")
        self.gamma_pos, self.gamma_neg = float(gamma_pos), float(gamma_neg)
        self.clip, self.eps = float(clip or 0.0), float(eps)
        self.disable_torch_grad_focal_loss = bool(disable_torch_grad_focal_loss)
        self.reduction, self.scale, self.label_smoothing = reduction, float(scale), label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_multilabel(logits, targets)
        t = _smooth(targets.float(), self.label_smoothing)
        p = torch.sigmoid(logits.float())
        p_neg = 1.0 - p
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1)
        loss = t * torch.log(p.clamp(min=self.eps)) + (1 - t) * torch.log(p_neg.clamp(min=self.eps))
        if self.gamma_pos > 0 or self.gamma_neg > 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.disable_torch_grad_focal_loss):
                pt = p * t + p_neg * (1 - t)
                w = torch.pow(1 - pt, self.gamma_pos * t + self.gamma_neg * (1 - t))
            loss = loss * w
        return _reduce(-loss, self.reduction, self.scale)


class CrossEntropy(nn.Module):
    """Cross-entropy over class indices: (N, C) logits, (N,) int targets -> scalar."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim != 1 or targets.dtype.is_floating_point:
            raise UserError(f"train.loss=ce needs one class index per image, got targets of shape "
                            f"{tuple(targets.shape)} ({targets.dtype}); multi-label data needs "
                            "train.loss=bce or asl")
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


_OPTIONS = {
    "ce": (),
    "bce": ("reduction", "scale"),
    "asl": ("gamma_pos", "gamma_neg", "clip", "eps", "disable_torch_grad_focal_loss", "reduction",
            "scale"),
}


def resolve_loss(name: str, multilabel: bool | None) -> str:
    """The loss `name` stands for: 'auto' is 'bce' for multi-label data and 'ce' otherwise."""
    if name == "auto":
        return "bce" if multilabel else "ce"
    return name


def build_loss(name: str, options: dict | None = None, label_smoothing: float = 0.0,
               multilabel: bool | None = None) -> nn.Module:
    """The loss `name` (auto, ce, bce, asl) with its `options`; `multilabel` (if known) is checked
    against the loss kind. Unknown names, options or values raise `UserError`."""
    options = dict(options or {})
    name = resolve_loss(name, multilabel)
    if name not in LOSSES:
        raise UserError(f"unknown loss '{name}'; {choices_hint(name, ('auto',) + LOSSES)}")
    bad = sorted(set(options) - set(_OPTIONS[name]))
    if bad:
        valid = ", ".join(_OPTIONS[name]) or "none"
        raise UserError(f"train.loss_options: {', '.join(bad)} not valid for loss '{name}'; valid: {valid}")
    if options.get("reduction", "mean") not in REDUCTIONS:
        raise UserError(f"train.loss_options.reduction '{options['reduction']}' is not valid; "
                        f"valid: {', '.join(REDUCTIONS)}")
    if not 0 <= label_smoothing < 1:
        raise UserError(f"train.label_smoothing must be in [0, 1), got {label_smoothing}")
    if multilabel is True and name == "ce":
        raise UserError("train.loss=ce needs single-label data; this dataset is multi-label: "
                        "use train.loss=bce or asl")
    if multilabel is False and name != "ce":
        raise UserError(f"train.loss={name} is for multi-label data; this dataset has one label "
                        "per image: use train.loss=ce")
    for key in ("gamma_pos", "gamma_neg", "clip", "eps", "scale"):
        if key in options and (isinstance(options[key], bool) or not isinstance(options[key], (int, float))):
            raise UserError(f"train.loss_options.{key}: expected a number, got {options[key]!r}")
    if name == "ce":
        return CrossEntropy(label_smoothing)
    if name == "bce":
        return BCELoss(label_smoothing=label_smoothing, **options)
    return AsymmetricLoss(label_smoothing=label_smoothing, **options)

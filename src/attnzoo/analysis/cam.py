"""Class activation maps on the last feature map of any network with `forward_features`.

The map is attached to the output of `model.forward_features` (the last 4-D feature map, the
layer Grad-CAM uses for ResNets), and the class score comes from `model.forward_head`. Every
method works on a whole batch at once:

- `gradcam`: Grad-CAM (Selvaraju et al. 2017). Channel weights are the spatial mean of the
  gradient of the class logit with respect to the feature map; the map is ReLU(sum_k w_k A_k).
  Only the head is differentiated, so the cost is one forward pass of the backbone.
- `eigencam`: Eigen-CAM (Muhammad & Yeasin 2020), gradient-free: the projection of the feature
  map onto its first principal component over positions (channels centred over positions), signed
  so that it correlates positively with the mean activation, then ReLU. Class-agnostic.
- `scorecam`: Score-CAM (Wang et al. 2020), gradient-free and class-specific: each channel,
  upsampled and scaled to [0, 1], masks the input; the channel weights are the softmax over
  channels of the class logits of the masked inputs. Costs one forward pass per channel used
  (`max_channels`, the most active ones).

All maps are returned at feature-map resolution, non-negative and scaled so that each map's
maximum is 1 (an all-zero map stays zero). `upsample` brings them to image resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, choices_hint

CAM_METHODS = ("gradcam", "eigencam", "scorecam")


def check_cam_model(model: nn.Module) -> None:
    """UserError unless the network has a layer the map can attach to."""
    missing = [m for m in ("forward_features", "forward_head") if not callable(getattr(model, m, None))]
    if missing:
        raise UserError(f"{type(model).__name__} has no {' or '.join(missing)}: no feature map to "
                        "attach a class activation map to (attnzoo and timm networks have both)")


def check_method(method: str) -> str:
    if method not in CAM_METHODS:
        raise UserError(f"unknown attention-map method '{method}'; {choices_hint(method, CAM_METHODS)}")
    return method


def _channels_last_layout(model: nn.Module, feats: torch.Tensor) -> bool:
    """True when forward_features returns (N, H, W, C) (e.g. timm's Swin), False for NCHW."""
    c = getattr(model, "num_features", None)
    return c is not None and feats.shape[1] != c and feats.shape[-1] == c


def features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(feature map as returned by forward_features, nhwc flag); UserError when it is not 4-D."""
    check_cam_model(model)
    feats = model.forward_features(images)
    if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise UserError(f"{type(model).__name__}.forward_features returns {shape}, not a 4-D "
                        "feature map: no spatial layer to attach a class activation map to")
    return feats, _channels_last_layout(model, feats)


def _normalise(cam: torch.Tensor) -> torch.Tensor:
    """(N, h, w) -> non-negative, each map divided by its maximum (zero maps stay zero)."""
    cam = cam.clamp_min(0)
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)
    return cam / peak[:, None, None]


def gradcam(model, feats: torch.Tensor, targets: torch.Tensor, nhwc: bool = False) -> torch.Tensor:
    """Grad-CAM of `targets` (N,) on `feats`; returns (N, h, w)."""
    with torch.enable_grad():
        f = feats.detach().requires_grad_(True)
        logits = model.forward_head(f)
        score = logits.gather(1, targets[:, None].to(logits.device)).sum()
        (grad,) = torch.autograd.grad(score, f)
    f = f.detach()
    if nhwc:
        f, grad = f.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
    weights = grad.mean(dim=(2, 3))  # (N, C)
    cam = torch.einsum("nc,nchw->nhw", weights, f)
    return _normalise(cam)


def eigencam(feats: torch.Tensor, nhwc: bool = False, squarings: int = 6) -> torch.Tensor:
    """Eigen-CAM of `feats` (N, C, h, w); returns (N, h, w). Class-agnostic.

    The first principal direction comes from batched power iteration with the Gram matrix
    raised to the power 2**squarings (64 by default) by repeated squaring.
    """
    f = feats.detach().float()
    if nhwc:
        f = f.permute(0, 3, 1, 2)
    n, c, h, w = f.shape
    x = f.flatten(2).transpose(1, 2)  # (N, hw, C)
    x = x - x.mean(dim=1, keepdim=True)
    # first principal component scores u = X v / |X v|, from the smaller Gram matrix (batched
    # LAPACK eigh is orders of magnitude slower for many small matrices)
    mean_act = f.mean(1).flatten(1)  # (N, hw)
    if h * w <= c:
        gram = x @ x.transpose(1, 2)  # (N, hw, hw)
        v = mean_act - mean_act.mean(1, keepdim=True) + 1e-3
    else:
        gram = x.transpose(1, 2) @ x  # (N, C, C)
        v = x.transpose(1, 2) @ (mean_act - mean_act.mean(1, keepdim=True) + 1e-3)[:, :, None]
        v = v[..., 0]
    v = v[:, :, None] / v.norm(dim=1, keepdim=True)[:, :, None].clamp_min(1e-12)
    # power iteration by repeated squaring: G <- G @ G / trace, so v <- G^(2^squarings) v
    for _ in range(squarings):
        gram = gram / gram.diagonal(dim1=1, dim2=2).sum(1).clamp_min(1e-30)[:, None, None]
        gram = gram @ gram
    v = gram @ v
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    proj = v[..., 0] if h * w <= c else (x @ v)[..., 0]  # (N, hw)
    sign = torch.sign(((proj - proj.mean(1, keepdim=True)) * mean_act).sum(1))
    sign[sign == 0] = 1
    cam = (proj * sign[:, None]).reshape(n, h, w)
    return _normalise(cam)


@torch.no_grad()
def scorecam(model, images: torch.Tensor, feats: torch.Tensor, targets: torch.Tensor,
             nhwc: bool = False, max_channels: int = 32, chunk: int = 512) -> torch.Tensor:
    """Score-CAM of `targets` (N,) for `images` (N, 3, H, W); returns (N, h, w)."""
    f = feats.detach().float()
    if nhwc:
        f = f.permute(0, 3, 1, 2)
    n, c, h, w = f.shape
    k = min(max_channels, c) if max_channels else c
    top = f.mean(dim=(2, 3)).topk(k, dim=1).indices  # (N, k) most active channels
    acts = f.gather(1, top[:, :, None, None].expand(n, k, h, w))  # (N, k, h, w)
    up = F.interpolate(acts, size=images.shape[-2:], mode="bilinear", align_corners=False)
    lo = up.flatten(2).amin(2)[:, :, None, None]
    hi = up.flatten(2).amax(2)[:, :, None, None]
    masks = (up - lo) / (hi - lo).clamp_min(1e-12)  # (N, k, H, W) in [0, 1]
    masked = (images[:, None] * masks[:, :, None]).flatten(0, 1)  # (N*k, 3, H, W)
    tgt = targets.to(images.device).repeat_interleave(k)
    scores = torch.cat([model(masked[i:i + chunk]).gather(1, tgt[i:i + chunk, None])
                        for i in range(0, masked.shape[0], chunk)]).reshape(n, k)
    weights = scores.softmax(dim=1)
    cam = torch.einsum("nk,nkhw->nhw", weights, acts)
    return _normalise(cam)


def upsample(cams: torch.Tensor, size) -> torch.Tensor:
    """(N, h, w) maps -> (N, H, W), bilinear, re-scaled to maximum 1."""
    if tuple(cams.shape[-2:]) == tuple(size):
        return cams
    up = F.interpolate(cams[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return _normalise(up)


@torch.no_grad()
def compute_cams(model: nn.Module, images: torch.Tensor, methods=("gradcam",), targets=None,
                 index=None, upsample_to_input: bool = True, max_channels: int = 32,
                 recorder=None) -> dict:
    """Maps of every method for one normalised batch `images` (N, 3, H, W), model in eval mode.

    `targets` are the classes to explain (default: the predicted ones). For several maps per
    image (multi-label), `index` (M,) names the image of each of the M `targets`. Returns a dict
    with `logits` (N, num_classes), `targets` (M,) and, per method, its maps (M, H, W) in [0, 1]
    at input resolution (feature resolution if `upsample_to_input` is False), and `feat_hw`,
    the feature map's (h, w). A `family.AttentionRecorder` given as `recorder` records only the
    plain forward pass (not Grad-CAM's head pass or Score-CAM's masked inputs).
    """
    methods = [check_method(m) for m in methods]
    if recorder is not None:
        recorder.active = True
    try:
        feats, nhwc = features(model, images)
        logits = model.forward_head(feats)
    finally:
        if recorder is not None:
            recorder.active = False
    if targets is None:
        targets = logits.argmax(1)
    targets = torch.as_tensor(targets, device=logits.device).long()
    if targets.numel() and not 0 <= int(targets.min()) <= int(targets.max()) < logits.shape[1]:
        raise UserError(f"the model predicts {logits.shape[1]} classes but the data has class "
                        f"{int(targets.max())}: analyse it on data with the classes it was trained on "
                        "(--data, --set data.*)")
    if index is not None:
        index = torch.as_tensor(index, device=feats.device).long()
        feats_m, images_m = feats[index], images[index]
    else:
        feats_m, images_m = feats, images
    feat_hw = tuple(feats.shape[1:3] if nhwc else feats.shape[-2:])
    out = {"logits": logits, "targets": targets, "feat_hw": feat_hw}
    for m in methods:
        if m == "gradcam":
            cam = gradcam(model, feats_m, targets, nhwc)
        elif m == "eigencam":
            cam = eigencam(feats, nhwc)
            cam = cam[index] if index is not None else cam
        else:
            cam = scorecam(model, images_m, feats_m, targets, nhwc, max_channels)
        out[m] = upsample(cam, images.shape[-2:]) if upsample_to_input else cam
    return out

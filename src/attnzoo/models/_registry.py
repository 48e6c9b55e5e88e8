"""Registration and construction of attnzoo networks through timm.

`@register` is timm's `register_model` plus a record of which names are ours, so that
`attnzoo.list_models()` lists attnzoo's networks and `timm.create_model(name)` builds them once
`attnzoo` is imported. Each model file defines its `default_cfgs` (timm's pretrained cfgs: input
size, mean/std, classifier, origin; no weight URLs) before its entrypoints, and every entrypoint
builds through `build`, i.e. timm's `build_model_with_cfg`: the cfg, local weights
(`pretrained=True, pretrained_cfg_overlay=dict(file=PATH)`) and `features_only` all go the timm way.
"""
from __future__ import annotations

import contextlib
import difflib
from functools import partial

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model

from ..errors import UserError
from ..weights import describe_mismatch, load_error_line, read_state_dict, state_mismatch

ATTNZOO_MODELS: set[str] = set()


def register(fn):
    """Decorator for a model entrypoint `fn(pretrained=False, **kwargs) -> nn.Module`."""
    ATTNZOO_MODELS.add(fn.__name__)
    return register_model(fn)


def cfg(paper: str, origin_url: str, license: str, **kwargs) -> dict:
    """A pretrained cfg with ImageNet defaults (224 px, 7x7 final map, `conv1` stem, `fc`)."""
    return dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="conv1", classifier="fc", paper_name=paper, origin_url=origin_url,
                license=license) | kwargs


def same_keys(state: dict, model) -> dict:
    """timm's `pretrained_filter_fn`: refuse a weight file whose keys are not the model's (timm
    loads non-strictly when the classifier is replaced, which would leave the rest random)."""
    classifier = model.pretrained_cfg.get("classifier") or ()
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}
    missing, unexpected, _ = state_mismatch(own, {k: v for k, v in state.items() if not k.startswith(heads)})
    if missing or unexpected:  # shapes are left to load_state_dict (LESA resamples its tables)
        raise UserError(f"{_source(model.pretrained_cfg)} does not fit model "
                        f"'{model.pretrained_cfg.get('architecture')}': "
                        + describe_mismatch(missing, unexpected, []))
    return state


def _construct(cls, **kwargs):
    """cls(**kwargs), with timm's `in_chans` attribute (the input channels it was built for)."""
    model = cls(**kwargs)
    model.in_chans = kwargs.get("in_chans", 3)
    return model


def _source(pretrained_cfg) -> str:
    file = pretrained_cfg.get("file")
    return f"pretrained file {file}" if file else "the pretrained state dict"


def build(cls, variant: str, pretrained: bool, kwargs: dict | None = None, *, filter_fn=same_keys,
          feature_cfg=None, **defaults):
    """`cls(**defaults, **kwargs)` (the entrypoint's `kwargs` win) built by timm's
    `build_model_with_cfg`; `features_only=True` wraps it in timm's `FeatureGetterNet` (the
    network's `forward_intermediates`); a `feature_cfg` among the kwargs replaces the given one.
    timm's `device` / `dtype` options: the network is built on `device` (e.g. 'meta': no memory)
    and then given `dtype`. A weight file (`pretrained_cfg_overlay=dict(file=PATH)`) is read by
    `attnzoo.weights.read_state_dict` and handed to timm as the overlay's state dict, so that a
    missing, unreadable or unfitting file is one UserError naming it."""
    kwargs = {**defaults, **(kwargs or {})}
    feature_cfg = kwargs.pop("feature_cfg", feature_cfg)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    read = pretrained and overlay.get("file") and overlay.get("state_dict") is None
    if read:
        kwargs["pretrained_cfg_overlay"] = overlay | dict(
            file=str(overlay["file"]), state_dict=read_state_dict(overlay["file"], "pretrained file"))
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = build_model_with_cfg(partial(_construct, cls), variant, pretrained,
                                         pretrained_filter_fn=filter_fn,
                                         feature_cfg=dict(feature_cls="getter", **(feature_cfg or {})),
                                         **kwargs)
    except RuntimeError as e:  # torch's several-line "Error(s) in loading state_dict"
        if not (pretrained and "Error(s) in loading state_dict" in str(e)):
            raise
        raise UserError(load_error_line(e, _source(overlay), variant)) from None
    if read:  # the cfg names the file; it does not keep its tensors
        model.pretrained_cfg.update(state_dict=None)
    return model.to(dtype=dtype) if dtype is not None else model


def check_registered(name, what: str = "model") -> None:
    """UserError naming the closest registered names unless `name` is a registered network
    (attnzoo's or timm's); `what` names its role in the message (model, backbone)."""
    if not isinstance(name, str) or not name:
        raise UserError(f"a {what} name is a non-empty string, got {name!r}; `attnzoo models` lists them")
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown {what} '{name}'; {hint}valid: attnzoo's networks "
                    "(`attnzoo models` lists them) or any name in timm.list_models()")

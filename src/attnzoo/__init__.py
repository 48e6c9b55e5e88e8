"""attnzoo: attention mechanisms for image recognition.

`import attnzoo` registers every attnzoo network in timm's registry, so both
`attnzoo.create_model(name)` and `timm.create_model(name)` build them.
"""
import fnmatch

import timm

from . import models  # noqa: F401  (registers the networks)
from .errors import UserError, choices_hint
from .models import ATTNZOO_MODELS
from .weights import read_state_dict

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "UserError", "__version__"]


def list_models(pattern: str = "*", include_timm: bool = False) -> list[str]:
    """Sorted names of attnzoo's networks matching a shell-style `pattern` (timm's too if asked)."""
    names = set(ATTNZOO_MODELS)
    if include_timm:
        names |= set(timm.list_models())
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def check_model_name(name: str) -> None:
    """UserError naming the closest registered names unless `name` is a registered network."""
    if not timm.is_model(name):
        raise UserError(f"unknown model '{name}'; {choices_hint(name, ATTNZOO_MODELS)} "
                        "(or any name in timm.list_models())")


def create_model(name: str, **kwargs):
    """Build a registered network (attnzoo's or timm's) by name; kwargs go to its constructor.

    Weights come from a local file only, the timm way: `pretrained=True,
    pretrained_cfg_overlay=dict(file=PATH)` (safetensors, or a torch state dict read with
    `weights_only=True`). An unknown name, an unreadable file or one that does not fit the network
    raises `UserError` with one line saying so.
    """
    check_model_name(name)
    kwargs.setdefault("pretrained", False)
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    file = overlay.get("file")
    if kwargs["pretrained"]:
        if not file and overlay.get("state_dict") is None:
            raise UserError(f"model '{name}': attnzoo downloads no weights; give a local file: "
                            "pretrained=True, pretrained_cfg_overlay=dict(file=PATH)")
        if file:  # read here (attnzoo's reader), so that a bad file is one clear line
            overlay.update(file=None, state_dict=read_state_dict(file, "pretrained file"))
        kwargs["pretrained_cfg_overlay"] = overlay
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError as e:  # an option the constructor does not take
        raise UserError(f"model '{name}': {e}") from None
    except RuntimeError as e:  # load_state_dict's shape report, several lines
        if not kwargs["pretrained"] or "state_dict" not in str(e):
            raise
        raise UserError(f"pretrained weights do not fit model '{name}': "
                        + " ".join(str(e).split())[:400]) from None
    if kwargs["pretrained"] and file:  # the cfg names the file, it does not hold its tensors
        model.pretrained_cfg.update(file=str(file), state_dict=None)
    return model

"""attnzoo: attention mechanisms for image recognition.

`import attnzoo` registers every attnzoo network in timm's registry, so both
`attnzoo.create_model(name)` and `timm.create_model(name)` build them. `add_attention` puts any
attnzoo block into a built network, and `create_model("resnet18+lsas_se")` does both at once.
"""
import fnmatch

import timm

from . import models  # noqa: F401  (registers the networks)
from .errors import UserError
from .layers import get_attn
from .models import ATTNZOO_MODELS
from .models.surgery import add_attention, load_host_weights, split_model_name
from .weights import load_error_line, read_state_dict

__version__ = "0.1.0"
__all__ = ["add_attention", "create_model", "get_attn", "list_models", "load_host_weights",
           "UserError", "__version__"]


def list_models(pattern: str = "*", include_timm: bool = False) -> list[str]:
    """Sorted names of attnzoo's networks matching a shell-style `pattern` (timm's too if asked)."""
    names = set(ATTNZOO_MODELS)
    if include_timm:
        names |= set(timm.list_models())
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def check_model_name(name: str) -> None:
    """UserError naming the closest registered names unless `name` is a registered network,
    alone or as 'host+block' (see `create_model`)."""
    split_model_name(name)


# Constructor options every network shares, checked here once: (type, least, greatest or None)
# (num_classes 0: no classifier, as in timm). Model-specific options are checked by the model.
_COMMON_KWARGS = {"num_classes": (int, 0, None), "in_chans": (int, 1, None), "img_size": (int, 1, None),
                  "drop_rate": (float, 0.0, 1.0), "drop_path_rate": (float, 0.0, 1.0)}


def _check_common_kwargs(name: str, kwargs: dict) -> None:
    for key, (kind, least, greatest) in _COMMON_KWARGS.items():
        value = kwargs.get(key)
        values = value if key == "img_size" and isinstance(value, (tuple, list)) else [value]
        types = (int, float) if kind is float else (int,)
        if value is not None and not all(isinstance(v, types) and not isinstance(v, bool) and v >= least
                                         and (greatest is None or v < greatest) for v in values):
            valid = f"an integer of at least {least}" if greatest is None else f"a number in [{least}, {greatest})"
            raise UserError(f"model '{name}': {key} must be {valid}"
                            f"{' (or a pair of them)' if key == 'img_size' else ''}, got {value!r}")


def create_model(name: str, **kwargs):
    """Build a registered network (attnzoo's or timm's) by name; kwargs go to its constructor.

    'host+block' (e.g. 'resnet18+lsas_se') builds the host and inserts the block with
    `add_attention`'s defaults. Weights come from a local file only, the timm way:
    `pretrained=True, pretrained_cfg_overlay=dict(file=PATH)` (safetensors, or a torch state dict
    read with `weights_only=True`). An unknown name, a bad shared option (num_classes, in_chans,
    img_size, drop rates), an unreadable file or one that does not fit the network raise
    `UserError` with one line saying what is valid.
    """
    host, block = split_model_name(name)
    _check_common_kwargs(name, kwargs)
    kwargs.setdefault("pretrained", False)
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    file = overlay.get("file")
    if kwargs["pretrained"]:
        if not file and overlay.get("state_dict") is None:
            raise UserError(f"model '{name}': attnzoo downloads no weights; give a local file: "
                            "pretrained=True, pretrained_cfg_overlay=dict(file=PATH)")
        # attnzoo's networks read the file themselves (models/_registry.build); timm's are given
        # it read the same way, so that a bad file is one clear line naming it
        if file:
            overlay.update(file=str(file), state_dict=read_state_dict(file, "pretrained file"))
        kwargs["pretrained_cfg_overlay"] = overlay
    try:
        model = timm.create_model(host, **kwargs)
    except UserError:
        raise
    except TypeError as e:  # an option the constructor does not take
        raise UserError(f"model '{host}': {e}") from None
    except (RuntimeError, ValueError, KeyError) as e:  # a timm network's load_state_dict report
        if not kwargs["pretrained"]:
            raise
        source = f"pretrained file {file}" if file else "the pretrained state dict"
        raise UserError(load_error_line(e, source, host)) from None
    if kwargs["pretrained"] and file:  # the cfg names the file, it does not hold its tensors
        model.pretrained_cfg.update(file=str(file), state_dict=None)
    return add_attention(model, block)[0] if block else model

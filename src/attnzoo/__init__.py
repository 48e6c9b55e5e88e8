"""attnzoo: attention mechanisms for image recognition.

`import attnzoo` registers every attnzoo network in timm's registry, so both
`attnzoo.create_model(name)` and `timm.create_model(name)` build them.
"""
import fnmatch
import pickle

import timm

from . import models  # noqa: F401  (registers the networks)
from .errors import UserError, choices_hint
from .models import ATTNZOO_MODELS
from .weights import check_torch_file, load_failure, quiet_unpickler

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
    if not isinstance(name, str) or not name:
        raise UserError(f"a model name is a non-empty string, got {name!r}; `attnzoo models` lists them")
    if not timm.is_model(name):
        raise UserError(f"unknown model '{name}'; {choices_hint(name, ATTNZOO_MODELS)} "
                        "(or any name in timm.list_models())")


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

    An unknown name, a bad shared option (num_classes, in_chans, img_size, drop rates) or
    pretrained weights that cannot be loaded raise `UserError` saying what is valid.
    """
    check_model_name(name)
    _check_common_kwargs(name, kwargs)
    kwargs.setdefault("pretrained", False)
    try:
        weights = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
        if kwargs["pretrained"] and weights and not str(weights).endswith(".safetensors"):
            check_torch_file(weights)  # timm would unpickle a text file into an opcode error
        with quiet_unpickler():
            return timm.create_model(name, **kwargs)
    except UserError:
        raise
    except TypeError as e:  # an option the constructor does not take
        raise UserError(f"model '{name}': {e}") from None
    except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
        # with pretrained weights: a text file, another architecture, a refused pickle
        if not kwargs["pretrained"]:
            raise
        raise UserError(f"model '{name}': its pretrained weights cannot be loaded ({load_failure(e)})") from None

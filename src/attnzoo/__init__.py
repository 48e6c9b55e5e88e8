"""attnzoo: attention mechanisms for image recognition.

`import attnzoo` registers every attnzoo network in timm's registry, so both
`attnzoo.create_model(name)` and `timm.create_model(name)` build them.
"""
import fnmatch

import timm

from . import models  # noqa: F401  (registers the networks)
from .errors import UserError, choices_hint
from .models import ATTNZOO_MODELS

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

    An unknown name raises `UserError` naming the closest registered names.
    """
    check_model_name(name)
    kwargs.setdefault("pretrained", False)
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as e:  # an option the constructor does not take
        raise UserError(f"model '{name}': {e}") from None

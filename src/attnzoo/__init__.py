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


def create_model(name: str, **kwargs):
    """Build a registered network (attnzoo's or timm's) by name; kwargs go to its constructor.

    'host+block' (e.g. 'resnet18+lsas_se') builds the host and inserts the block with
    `add_attention`'s defaults. An unknown name raises `UserError` naming the closest names.
    """
    host, block = split_model_name(name)
    kwargs.setdefault("pretrained", False)
    try:
        model = timm.create_model(host, **kwargs)
    except TypeError as e:  # an option the constructor does not take
        raise UserError(f"model '{host}': {e}") from None
    return add_attention(model, block)[0] if block else model

"""Registration of attnzoo networks in timm's model registry.

`@register` is timm's `register_model` plus a record of which names are ours, so that
`attnzoo.list_models()` lists attnzoo's networks and `timm.create_model(name)` builds them once
`attnzoo` is imported.
"""
import timm
from timm.models import register_model

ATTNZOO_MODELS: set[str] = set()


def register(fn):
    """Decorator for a model entrypoint `fn(pretrained=False, **kwargs) -> nn.Module`."""
    ATTNZOO_MODELS.add(fn.__name__)
    return register_model(fn)


# Keyword arguments timm.create_model adds for its own weight loading; attnzoo networks ignore them.
TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


def build(cls, name: str, pretrained, kwargs: dict, **defaults):
    """Construct `cls(**defaults, **kwargs)` for the entrypoint `name` (timm-only kwargs dropped)."""
    no_pretrained(name, pretrained)
    kwargs = {k: v for k, v in kwargs.items() if k not in TIMM_ONLY_KWARGS}
    return cls(**{**defaults, **kwargs})


def no_pretrained(name: str, pretrained) -> None:
    """attnzoo ships no weights: pretrained=True would silently give a random network."""
    if pretrained:
        from ..errors import UserError

        raise UserError(
            f"{name}: attnzoo downloads no weights; load a local file instead "
            "(`--set model.checkpoint=PATH`, or `attnzoo convert` for official checkpoints)"
        )


def check_registered(name, what: str = "model") -> None:
    """UserError naming the closest registered names unless `name` is a registered network
    (attnzoo's or timm's); `what` names its role in the message (model, backbone)."""
    from ..errors import UserError

    if not isinstance(name, str) or not name:
        raise UserError(f"a {what} name is a non-empty string, got {name!r}; `attnzoo models` lists them")
    if timm.is_model(name):
        return
    import difflib

    close = difflib.get_close_matches(str(name), timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown {what} '{name}'; {hint}valid: attnzoo's networks "
                    "(`attnzoo models` lists them) or any name in timm.list_models()")

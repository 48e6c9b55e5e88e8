"""`attnzoo models [PATTERN]`: attnzoo's registered networks with their parameter counts."""
from __future__ import annotations

from ..errors import UserError


def run(args) -> int:
    import torch

    from .. import create_model, list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no attnzoo model matches '{args.pattern}'; `attnzoo models` lists all")
    width = max(len(n) for n in names)
    for name in names:
        with torch.device("meta"):  # parameter counts without allocating weights
            params = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<{width}}  {params / 1e6:8.2f}M", flush=True)
    return 0

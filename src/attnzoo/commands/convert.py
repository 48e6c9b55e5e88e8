"""`attnzoo convert --from SOURCE CKPT --model NAME --out F.safetensors` (see attnzoo.convert)."""
from __future__ import annotations

from .overrides import kwarg_overrides


def run(args) -> int:
    from ..convert import convert_checkpoint

    print(convert_checkpoint(args.source, args.checkpoint, args.model, args.out,
                             kwarg_overrides(args.kwarg)))
    return 0

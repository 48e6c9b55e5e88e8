"""`attnzoo eval --checkpoint PATH`: a saved model's metrics on every eval split, as JSON."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import check_writable
from .overrides import data_overrides


def run(args) -> int:
    from ..engine.evaluate import evaluate_checkpoint

    if args.out:
        check_writable(args.out, "--out")
    result = evaluate_checkpoint(args.checkpoint, lambda cfg: data_overrides(args, cfg), args.device)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0

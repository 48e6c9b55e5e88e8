"""`attnzoo analyze --checkpoint PATH`: attention maps and bias statistics (see attnzoo.analysis)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError, check_writable
from .overrides import data_overrides


def parse_pixels(items: list[str] | None) -> list[tuple[int, ...]] | None:
    """['3,4', '7,7'] -> [(3, 4), (7, 7)]; UserError for anything else."""
    if not items:
        return None
    try:
        return [tuple(int(v) for v in p.split(",")) for p in items]
    except ValueError:
        raise UserError(f"--pixels {' '.join(items)}: expected ROW,COL pairs, e.g. 3,4 7,7") from None


def run(args) -> int:
    from ..analysis import run_analysis

    if args.out_dir:
        check_writable(args.out_dir, "--out-dir", folder=True)
    result = run_analysis(args.checkpoint, out_dir=args.out_dir,
                          data_overrides=lambda cfg: data_overrides(args, cfg),
                          num_samples=args.num_samples, methods=tuple(args.methods),
                          split=args.split, pixels=parse_pixels(args.pixels), batch_size=args.batch_size,
                          device=args.device, bias=not args.no_bias, boxes_file=args.boxes)
    out = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).resolve().parent.parent / "analysis"
    print(f"report: {out / 'report.md'}  (statistics: {out / 'bias.json'})")
    bias = (result.get("bias") or {}).get(args.methods[0], {}).get("all") or {}
    headline = {"bias": {k: v for k, v in bias.items() if not isinstance(v, list)},
                "context": result.get("context")}
    print(json.dumps(headline, indent=2))
    return 0

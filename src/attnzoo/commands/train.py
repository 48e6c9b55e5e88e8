"""`attnzoo train [RECIPE]`: load the config, train, and print the results table (see engine.train)."""
from __future__ import annotations

from .overrides import run_overrides


def run(args) -> int:
    from ..engine.config import load_config
    from ..engine.distributed import elastic_resume
    from ..engine.rundir import config_to_continue
    from ..engine.train import train

    overrides = run_overrides(args)
    cfg = load_config(args.recipe, overrides)
    resume = elastic_resume(args.resume)  # 'auto' in a group torchrun restarted
    cfg = config_to_continue(cfg, args.recipe, overrides, resume)  # the run's own config
    if args.dry_run:
        from ..engine.dryrun import dry_run_config

        cfg = dry_run_config(cfg, args.out_dir)
    summary = train(cfg, resume=resume, quiet=args.quiet)
    if args.dry_run:
        print(f"dry run of {args.recipe or 'the defaults'} passed: {summary['steps']} steps, "
              f"model {summary['model']} ({summary['params'] / 1e6:.2f}M params)")
    return 0

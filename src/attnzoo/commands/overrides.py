"""Command-line options as config overrides: the shortcuts of `train` and `compare` (`--epochs`,
`--model`, ...), the `data.*` changes of `eval` and `analyze`, and `--kwarg KEY=VALUE` lists."""
from __future__ import annotations

import json

from ..engine.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    deep_merge,
    parse_override,
)


def run_overrides(args) -> list[str]:
    """`--set` items for the shortcut options given, then the user's own `--set` items."""
    pairs = {"data.name": args.data, "data.root": args.data_dir, "schedule.epochs": args.epochs,
             "data.batch_size": args.batch_size, "optim.lr": args.lr, "train.device": args.device,
             "out_dir": args.out_dir}
    pairs.update({"model.name": getattr(args, "model", None), "train.seed": getattr(args, "seed", None),
                  "model.pretrained": getattr(args, "pretrained", None), "name": getattr(args, "name", None)})
    # strings quoted, so '--name 2024' stays a name and '--model ""' is refused, not the default
    return [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in pairs.items()
            if v is not None] + args.overrides


def data_overrides(args, cfg: Config) -> Config:
    """A saved run's config with the data of `--data`, `--data-dir`, `--batch-size` and `--set data.*`.

    Another dataset starts from its own defaults: the options and folder of the one the run was
    trained on are dropped (they rarely fit another). `--set data.options={}` empties the options
    and `--set data.options.KEY=null` removes one.
    """
    saved = config_to_dict(cfg)
    data = saved["data"]
    if args.data is not None and args.data != data["name"]:
        data.update(options={}, root=None)
    given = {"name": args.data, "root": args.data_dir, "batch_size": getattr(args, "batch_size", None)}
    data.update({k: v for k, v in given.items() if v is not None})
    merged = apply_overrides(saved, args.overrides)
    options = merged["data"].get("options")
    if isinstance(options, dict):
        merged["data"]["options"] = {k: v for k, v in options.items() if v is not None}
    return config_from_dict(merged)


def kwarg_overrides(items: list[str]) -> dict:
    """`--kwarg KEY=VALUE` items -> constructor keyword arguments (values parsed as YAML)."""
    out = {}
    for item in items:
        out = deep_merge(out, parse_override(item, flag="--kwarg"))
    return out

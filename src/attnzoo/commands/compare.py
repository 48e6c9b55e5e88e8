"""`attnzoo compare`: train several networks with one recipe over several seeds, then tabulate.

For every model and seed the base config is copied with `model.name`, `train.seed`, the run name
`<model>-s<seed>` and `out_dir = <out_dir>/runs` changed, and trained. A model named
'host+block' (e.g. `resnet18+lsas_se`, any block of `attnzoo.layers.block_names()`) is the
network `host` with `block` put in by `attnzoo.add_attention`, so
`--models resnet18,resnet18+lsas_se,resnet18+sb` compares blocks on one host. A run whose folder
already holds a `summary.json` is not trained again (an interrupted comparison resumes; an
interrupted run resumes from its `last.pt`). Then `<out_dir>` gets

- `comparison.json`: every run's metrics and, per model, mean, std (sample, n-1), n and values
  of every numeric metric over the seeds;
- `comparison.md`: one row per metric, one column per model (mean ± std), and, when the recipe
  has a `paper:` section, a paper column next to the recipe's own model;
  when blocks are inserted, two first rows name each column's host and block;
- `comparison.png`: bar charts with std error bars.

With `analyze=True`, `attnzoo.analysis.bias_columns` is run on each run's best checkpoint and its
columns (energy in box, position/range-bias rates, swapped-split gap, ...) join the table; they
are cached in `<run>/analysis/bias_columns.json`.

Training and caching are here; aggregation is `compare_stats`, the table, charts and files
`compare_render`.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from ..analysis import bias_columns
from ..engine.checkpoint import load_model
from ..engine.config import Config, config_to_dict, validate
from ..engine.train import TrainingDiverged, train
from ..errors import UserError
from ..models.surgery import split_model_name
from .compare_render import write_outputs
from .compare_stats import aggregate, flat_metrics, number, primary_split

# ---------------------------------------------------------------------------- running

def _bias_for_run(cfg: Config, device: str) -> dict:
    cache = cfg.run_dir / "analysis" / "bias_columns.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from ..data import build_data

    best = cfg.run_dir / "checkpoints" / "best.safetensors"
    if not best.exists():
        raise UserError(f"compare --analyze: {best} is missing; the run saved no best checkpoint")
    model, run_cfg = load_model(best, map_location=device)
    bundle = build_data(run_cfg.data, train=False)
    cols = bias_columns(model, bundle, device=device)
    cols = {k: float(v) for k, v in cols.items() if number(v)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(cols, indent=2))
    return cols


def hosts_and_blocks(models: list[str], base: Config) -> dict:
    """{model: {"host", "block"}}: the network each column builds and the block inserted into it
    ('host+block' names, or the recipe's model.attn; None when none is)."""
    out = {}
    for model in models:
        host, block = split_model_name(model)
        out[model] = {"host": host, "block": block or base.model.attn}
    return out


def run_config(base: Config, model: str, seed: int, out_dir: Path) -> Config:
    """The config of one run of a comparison (see the module docstring)."""
    cfg = copy.deepcopy(base)
    cfg.model.name = model
    cfg.train.seed = int(seed)
    cfg.name = f"{model}-s{seed}"
    cfg.out_dir = str(Path(out_dir) / "runs")
    validate(cfg)
    return cfg


def _check_inputs(models, seeds) -> tuple[list[str], list[int]]:
    models = [m.strip() for m in models if m and m.strip()]
    if not models:
        raise UserError("compare: give at least one model, e.g. --models resnet20_cifar,resnet56_cifar")
    if len(set(models)) != len(models):
        raise UserError(f"compare: a model is named twice in {', '.join(models)}")
    for name in models:
        split_model_name(name)
    seeds = list(seeds)
    if not seeds:
        raise UserError("compare: give at least one seed")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise UserError(f"compare: seeds must be integers, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"compare: a seed is given twice in {seeds}")
    return models, seeds


def compare(models: list[str], seeds: list[int], base: Config, out_dir: Path, analyze: bool = False,
            train_fn=None, quiet: bool = False, analyze_device: str = "cpu") -> dict:
    """Train every model with every seed on the recipe `base`, then write the comparison files.

    Args:
        models: network names (attnzoo's or timm's, or 'host+block'); checked before anything
            is trained.
        seeds: integer seeds; every model is trained once per seed.
        base: the recipe; its `model.kwargs` go to every model, its `paper:` section is shown
            next to `base.model.name`'s column.
        out_dir: gets runs/<model>-s<seed>/ and comparison.{json,md,png}.
        analyze: add `attnzoo.analysis.bias_columns` of each run's best checkpoint.
        train_fn: the training function, called as train_fn(cfg, resume="auto", quiet=quiet)
            (default `attnzoo.engine.train.train`; tests pass a fake).
        quiet: no progress lines here nor in the training runs.
        analyze_device: where the bias statistics are computed.

    Returns the dict written to comparison.json: models, seeds, recipe, recipe_model, paper,
    primary_split, runs [{model, seed, run_dir, reused, metrics}], failed [{model, seed,
    run_dir, error}] (runs whose loss diverged; the others go on), aggregate
    {model: {metric: {mean, std, n, values}}}, files.
    """
    models, seeds = _check_inputs(models, seeds)
    out_dir = Path(out_dir)
    train_fn = train_fn or train
    runs, failed, primary = [], [], None
    total = len(models) * len(seeds)
    for model in models:
        for seed in seeds:
            cfg = run_config(base, model, seed, out_dir)
            summary_path = cfg.run_dir / "summary.json"
            reused = summary_path.exists()
            if not quiet:
                done = len(runs) + len(failed) + 1
                print(f"[compare {done}/{total}] {model} seed {seed}: "
                      f"{'results already in ' + str(summary_path) if reused else 'training'}",
                      file=sys.stderr, flush=True)
            if reused:
                try:
                    summary = json.loads(summary_path.read_text())
                except (OSError, json.JSONDecodeError) as e:
                    raise UserError(f"{summary_path} is unreadable ({e}); delete it to train the run "
                                    "again") from None
            else:
                try:
                    summary = train_fn(cfg, resume="auto", quiet=quiet)
                except TrainingDiverged as e:  # one diverged seed must not lose the others
                    failed.append({"model": model, "seed": seed, "run_dir": str(cfg.run_dir),
                                   "error": str(e)})
                    continue
            primary = primary or primary_split(summary)
            bias = _bias_for_run(cfg, analyze_device) if analyze else None
            runs.append({"model": model, "seed": seed, "run_dir": str(cfg.run_dir), "reused": reused,
                         "metrics": flat_metrics(summary, bias)})

    result = {
        "models": models, "hosts": hosts_and_blocks(models, base), "seeds": seeds,
        "recipe": base.name, "recipe_model": base.model.name,
        "paper": dict(base.paper or {}), "primary_split": primary, "analyze": analyze,
        "base_config": config_to_dict(base), "runs": runs, "failed": failed,
        "aggregate": aggregate(runs),
    }
    write_outputs(result, out_dir)
    return result


def run(args) -> int:
    """`attnzoo compare --models A,B [RECIPE]`: the comparison table (or its JSON) on stdout."""
    from ..engine.config import load_config
    from ..errors import check_writable
    from .overrides import run_overrides

    base = load_config(args.recipe, run_overrides(args))
    out_dir = Path(base.out_dir) / (args.name or f"compare-{'-vs-'.join(args.models)}")
    check_writable(out_dir, "comparison folder", folder=True)
    result = compare(args.models, list(range(args.seeds)), base, out_dir, analyze=args.analyze)
    table = out_dir / "comparison.md"
    print(table.read_text() if table.exists() else json.dumps(result, indent=2))
    return 0

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
"""
from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

from ..analysis import bias_columns
from ..engine.checkpoint import load_model
from ..engine.config import Config, config_to_dict, validate
from ..engine.flops import human
from ..engine.train import TrainingDiverged, train
from ..errors import UserError
from ..models.surgery import split_model_name

# Summary keys (besides the best/final metrics) that the comparison tabulates, in table order.
COST_KEYS = ("params", "macs", "macs_elementwise", "train_img_per_s", "wall_time_s")
_LABELS = {"params": "params", "macs": "MACs / image", "macs_elementwise": "MACs + element-wise / image",
           "train_img_per_s": "train img/s",
           "wall_time_s": "wall time (s)"}
# Paper keys that name a cost row rather than a metric of the primary split.
_PAPER_COST = {"params": "params", "flops": "macs", "macs": "macs", "macs_elementwise": "macs_elementwise"}


# ---------------------------------------------------------------------------- aggregation

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def primary_split(summary: dict) -> str | None:
    """The split whose metric selects the best checkpoint: the first one in `best`."""
    for key, value in (summary.get("best") or {}).items():
        if isinstance(value, dict):
            return key
    return None


def flat_metrics(summary: dict, bias: dict | None = None) -> dict:
    """The numbers of one run: best.<split>.<metric>, final.<split>.<metric>, bias.<column>,
    and the cost keys. Flat best/final dicts (no split level) give best.<metric>."""
    out = {}
    for stage in ("best", "final"):
        for key, value in (summary.get(stage) or {}).items():
            if isinstance(value, dict):
                out.update({f"{stage}.{key}.{m}": v for m, v in value.items() if _number(v)})
            elif _number(value):
                out[f"{stage}.{key}"] = value
    for key, value in (bias or {}).items():
        if _number(value):
            out[f"bias.{key}"] = value
    for key in COST_KEYS:
        if _number(summary.get(key)):
            out[key] = summary[key]
    return out


def mean_std(values: list) -> dict:
    """{mean, std (sample, 0 for one value), n, values}."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "values": list(values)}


def aggregate(runs: list[dict]) -> dict:
    """{model: {metric: mean_std}} over the runs ({model, metrics}) of each model."""
    grouped: dict[str, dict[str, list]] = {}
    for run in runs:
        per_model = grouped.setdefault(run["model"], {})
        for key, value in run["metrics"].items():
            per_model.setdefault(key, []).append(value)
    return {model: {k: mean_std(v) for k, v in metrics.items()} for model, metrics in grouped.items()}


def _row_order(keys, primary: str | None) -> list[str]:
    """best (primary split first), final, bias, then the costs."""
    def rank(key: str):
        parts = key.split(".")
        if parts[0] in ("best", "final"):
            split_rank = 0 if len(parts) == 3 and parts[1] == primary else 1
            split = parts[1] if len(parts) == 3 else ""
            return (0 if parts[0] == "best" else 1, split_rank, split, parts[-1] == "loss", key)
        if parts[0] == "bias":
            return (2, 0, "", False, key)
        return (3, COST_KEYS.index(key) if key in COST_KEYS else 99, "", False, key)

    return sorted(keys, key=rank)


def label(key: str) -> str:
    """'best.test.top1' -> 'best test top1'; cost keys get their unit."""
    return _LABELS.get(key, key.replace(".", " "))


def _fmt(key: str, stat: dict | None) -> str:
    if stat is None:
        return "-"
    mean, std = stat["mean"], stat["std"]
    if key in ("params", "macs", "macs_elementwise"):
        return human(mean) if std == 0 else f"{human(mean)} ± {human(std)}"
    if key in ("train_img_per_s", "wall_time_s"):
        digits = 1
    else:  # bias columns are fractions (4 digits), except gaps in points of accuracy
        digits = 4 if key.startswith("bias.") and "gap" not in key else 2
    text = f"{mean:.{digits}f}"
    return text if stat["n"] == 1 else f"{text} ± {std:.{digits}f}"


def paper_rows(paper: dict, primary: str | None, keys) -> dict:
    """Map the recipe's `paper:` numbers onto table rows: {row key: value}.

    top1/top5/mAP/... go to the primary split's best metric of that name, params and
    flops/macs to the cost rows; a key with no row gets its own row 'paper.<key>'.
    """
    rows = {}
    for key, value in (paper or {}).items():
        if key == "source":
            continue
        if key in _PAPER_COST:
            rows[_PAPER_COST[key]] = value
            continue
        candidates = [f"best.{primary}.{key}", f"best.{key}"]
        target = next((c for c in candidates if c in keys), None)
        rows[target or f"paper.{key}"] = value
    return rows


def _fmt_paper(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_comparison(result: dict) -> str:
    """The markdown table of a comparison: rows are metrics, columns models (+ paper)."""
    models, agg = result["models"], result["aggregate"]
    primary = result.get("primary_split")
    keys = set()
    for model in models:
        keys |= set(agg.get(model, {}))
    paper = result.get("paper") or {}
    p_rows = paper_rows(paper, primary, keys)
    order = _row_order(keys, primary) + [k for k in p_rows if k not in keys]
    columns = [("model", m, m) for m in models]
    if p_rows:
        recipe_model = result.get("recipe_model")
        col = ("paper", None, f"paper ({recipe_model})" if recipe_model else "paper")
        at = models.index(recipe_model) + 1 if recipe_model in models else len(columns)
        columns.insert(at, col)
    n_seeds = len(result.get("seeds", []))
    lines = [f"# Comparison: {', '.join(models)}", "",
             f"Recipe `{result.get('recipe', '')}`, seeds {result.get('seeds')}: mean ± std over "
             f"{n_seeds} seed{'s' if n_seeds != 1 else ''} (sample std). 'best' is the evaluation "
             "that selected the best checkpoint; MACs are multiply-adds for one image.", "",
             "| metric | " + " | ".join(c[2] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    hosts = result.get("hosts") or {}
    if any(h["block"] for h in hosts.values()):  # the same host with different blocks
        for row, key in (("host", "host"), ("inserted block", "block")):
            cells = [(hosts[m][key] or "-") if kind == "model" else "" for kind, m, _ in columns]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for key in order:
        cells = [(_fmt_paper(p_rows[key]) if key in p_rows else "") if kind == "paper"
                 else _fmt(key, agg.get(model, {}).get(key)) for kind, model, _ in columns]
        row_label = f"paper {key.split('.', 1)[1]}" if key.startswith("paper.") else label(key)
        lines.append(f"| {row_label} | " + " | ".join(cells) + " |")
    if p_rows and paper.get("source"):
        lines += ["", f"Paper numbers: {str(paper['source']).rstrip('.')}."]
    missing = [f"{r['model']} seed {r['seed']}" for r in result.get("failed", [])]
    if missing:
        lines += ["", "Runs without results: " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def plot_comparison(result: dict, path: Path) -> Path:
    """Bar charts (mean, std error bars) of each best metric (losses left out), the bias columns
    and the training throughput, one panel each, one bar per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models, agg = result["models"], result["aggregate"]
    keys = set()
    for model in models:
        keys |= set(agg.get(model, {}))
    panels = [k for k in _row_order(keys, result.get("primary_split"))
              if (k.startswith("best.") and not k.endswith(".loss")) or k.startswith("bias.")
              or k == "train_img_per_s"]
    panels = panels[:12] or sorted(keys)[:1]
    cols = min(3, max(len(panels), 1))
    rows = math.ceil(len(panels) / cols) if panels else 1
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    FigureCanvasAgg(fig)
    colors = [f"C{i % 10}" for i in range(len(models))]
    for i, key in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        means = [agg.get(m, {}).get(key, {}).get("mean", float("nan")) for m in models]
        stds = [agg.get(m, {}).get(key, {}).get("std", 0.0) for m in models]
        ax.bar(range(len(models)), means, yerr=stds, capsize=4, color=colors)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=20, ha="right", fontsize=8)
        ax.set_title(label(key), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{result.get('recipe', '')}: mean ± std over seeds {result.get('seeds')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_outputs(result: dict, out_dir: Path) -> dict:
    """comparison.json, comparison.md and comparison.png in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out_dir / "comparison.json"), "md": str(out_dir / "comparison.md"),
             "png": str(out_dir / "comparison.png")}
    result["files"] = files
    Path(files["md"]).write_text(format_comparison(result))
    plot_comparison(result, Path(files["png"]))
    Path(files["json"]).write_text(json.dumps(result, indent=2, default=str))
    return files


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
    cols = {k: float(v) for k, v in cols.items() if _number(v)}
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

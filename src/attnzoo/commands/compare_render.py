"""Rendering for `attnzoo compare`: the Markdown table, the bar charts and the files."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..engine.flops import human
from .compare_stats import COST_KEYS

_LABELS = {"params": "params", "macs": "MACs / image",
           "macs_elementwise": "MACs + element-wise / image", "train_img_per_s": "train img/s",
           "wall_time_s": "wall time (s)"}
# Paper keys that name a cost row rather than a metric of the primary split.
_PAPER_COST = {"params": "params", "flops": "macs", "macs": "macs", "macs_elementwise": "macs_elementwise"}


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


def _metric_keys(result: dict) -> set:
    """Every metric that some model of the comparison has."""
    return set().union(*(result["aggregate"].get(m, {}) for m in result["models"]))


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
    keys = _metric_keys(result)
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
    keys = _metric_keys(result)
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

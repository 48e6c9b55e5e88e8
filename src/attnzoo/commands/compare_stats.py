"""Aggregation for `attnzoo compare`: each run's numbers flattened, then mean and std over seeds."""
from __future__ import annotations

import math

# Summary keys (besides the best/final metrics) that the comparison tabulates, in table order.
COST_KEYS = ("params", "macs", "macs_elementwise", "train_img_per_s", "wall_time_s")


def number(value) -> bool:
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
                out.update({f"{stage}.{key}.{m}": v for m, v in value.items() if number(v)})
            elif number(value):
                out[f"{stage}.{key}"] = value
    for key, value in (bias or {}).items():
        if number(value):
            out[f"bias.{key}"] = value
    for key in COST_KEYS:
        if number(summary.get(key)):
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

"""Rendering: the report of `run_analysis` as strict JSON, Markdown and PNG figures."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from . import figures


def jsonable(report: dict) -> dict:
    """`report` with tensors as lists, paths as strings and NaN / inf as None (strict JSON)."""
    return _clean(json.loads(json.dumps(report, default=_json_default)))


def _clean(o):
    """NaN / inf -> None, so that bias.json is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def family_figures(gate_means, pixel_items, image, feat_hw, class_names, fig_dir: Path) -> list:
    """gates.png (class-mean channel gates per stage) and pixel_attention.png (SAN/LESA attention
    at the chosen pixels of `image`), for the parts given (None: not drawn)."""
    paths = []
    if gate_means is not None:
        paths.append(figures.gate_heatmaps(gate_means, fig_dir / "gates.png", class_names))
    if pixel_items is not None:
        paths.append(figures.pixel_attention(image, pixel_items, feat_hw, fig_dir / "pixel_attention.png"))
    return paths


def map_figures(figure: dict, bias: dict, with_boxes: bool, fig_dir: Path) -> list:
    """maps.png (images, maps and boxes) and bias_curves.png, where there is something to draw."""
    paths = []
    if figure["titles"]:
        maps = {m: torch.stack(v) for m, v in figure["maps"].items() if v}
        paths.append(figures.cam_grid(torch.stack(figure["images"]), maps, figure["boxes"] if with_boxes else None,
                                      figure["titles"], fig_dir / "maps.png"))
    if bias:
        paths.append(figures.bias_curves(bias, fig_dir / "bias_curves.png"))
    return paths


def _fmt(v, pct=False):
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}" if isinstance(v, float) else str(v)


def render_report(r: dict) -> str:
    """The markdown report of a `run_analysis` result."""
    lines = [f"# Attention analysis: {r['model']}", "",
             f"Checkpoint `{r['checkpoint']}`; dataset `{r['dataset']}`, split `{r['split']}`, "
             f"{r['num_images']} images, {r['num_maps']} maps (class explained: {r['target']}); "
             f"feature map {r['feature_map'][0]}x{r['feature_map'][1]}; eps = {r['eps']}.", ""]
    if r["bias"]:
        lines += ["## Attention bias", ""]
        for method, s in r["bias"].items():
            t = f"@{s['at_threshold']:g}"
            lines += [f"### {method} (threshold t = {s['at_threshold']:g}; rates in %)", "",
                      "| group | n | energy in box | pointing | IoU | position bias | range bias | contained |",
                      "|---|---|---|---|---|---|---|---|"]
            for g in ("all", "correct", "wrong"):
                d = s[g]
                if not d.get("n"):
                    lines.append(f"| {g} | 0 | – | – | – | – | – | – |")
                    continue
                lines.append(f"| {g} | {d['n']} | {_fmt(d['energy_in_box'], True)} | "
                             f"{_fmt(d['pointing'], True)} | {_fmt(d['iou' + t], True)} | "
                             f"{_fmt(d['position_bias_rate' + t], True)} | "
                             f"{_fmt(d['range_bias_rate' + t], True)} | {_fmt(d['contained_rate' + t], True)} |")
            lines += ["", "Against the threshold (all samples, %):", "",
                      "| t | " + " | ".join(f"{x:g}" for x in s["thresholds"]) + " |",
                      "|---|" + "---|" * len(s["thresholds"])]
            for key, label in (("iou", "IoU"), ("position_bias_rate", "position bias"),
                               ("range_bias_rate", "range bias")):
                lines.append(f"| {label} | " + " | ".join(_fmt(v, True) for v in s["all"][key]) + " |")
            lines.append("")
    c = r["context"]
    lines += ["## Contextual bias", "", "| split | metric |", "|---|---|"]
    for name, m in c["splits"].items():
        lines.append(f"| {name} | " + ", ".join(f"{k} {_fmt(v)}" for k, v in m.items()) + " |")
    if "swapped_gap" in c:
        lines += ["", f"swapped_gap ({c['metric']}, test − test_swapped): **{_fmt(c['swapped_gap'])}** points"]
    if "exclusive_cooccur" in c:
        e = c["exclusive_cooccur"]
        lines += ["", f"Exclusive / co-occurring split ({len(e['pairs'])} biased pairs from "
                  f"`{e['pairs_from']}`): exclusive mAP {_fmt(e['exclusive_map'])}, co-occurring mAP "
                  f"{_fmt(e['cooccur_map'])}."]
    lines.append("")
    fam = r["family"]
    lines += ["## Family attention", ""]
    if fam.get("gates"):
        lines += ["Channel gates per stage (means over modules and samples):", "",
                  "| stage | modules | mean | channel std | sample std | class selectivity |",
                  "|---|---|---|---|---|---|"]
        for s, d in fam["gates"]["stages"].items():
            lines.append(f"| {s} | {d['modules']} | {_fmt(d['mean'])} | {_fmt(d['channel_std'])} | "
                         f"{_fmt(d['sample_std'])} | {_fmt(d.get('class_selectivity'))} |")
        lines.append("")
    else:
        lines.append("No channel gates found (SE, LSAS, SB or timm gated modules).")
    lines.append(f"SAN/LESA spatial attention modules: {len(fam['spatial_modules'])}; "
                 f"IDA class-specific attention: {'yes' if fam['class_spatial'] else 'no'}.")
    lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in r["figures"]]
    lines += ["", "## Definitions", ""] + [f"- **{k}**: {v}" for k, v in r["definitions"].items()]
    return "\n".join(lines) + "\n"

"""`run_analysis`: attention maps, bias statistics, contextual bias and family attention of one
checkpoint, written as `analysis/report.md`, `analysis/bias.json` and PNG figures.

The work is split three ways: `collect` runs the network over the data and gathers maps,
statistics, scores and gates; this module computes the report from them (bias summaries,
contextual bias, family summaries) and writes it; `render` turns it into JSON, Markdown and
figures. `bias_columns` (the columns `attnzoo compare --analyze` adds) is in `columns`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ..engine.device import resolve_device
from ..errors import UserError
from .bias import summarize
from .cam import features as cam_features
from .collect import (
    AnalysisOptions,
    SplitResult,
    analyze_split,
    batches,
    check_boxes,
    choose_split,
    split_scores,
)
from .context import contextual_bias
from .family import AttentionRecorder, attention_at_pixels, check_pixels, class_mean_gates, summarize_gates
from .render import family_figures, jsonable, map_figures, render_report

DEFINITIONS = {
    "map": "class activation map at the last feature map, ReLU, upsampled bilinearly to the image, "
           "divided by its maximum (values in [0, 1])",
    "box region B": "pixels whose centre lies in a ground-truth box of the explained class",
    "energy_in_box": "sum of the map inside B / sum of the map (energy pointing game)",
    "pointing": "share of maps whose maximum lies in B (pointing game)",
    "A_t": "attended region: pixels where the map >= t",
    "iou": "|A_t and B| / |A_t or B|",
    "inside(t)": "|A_t and B| / |A_t|, the share of the attended region inside the box",
    "position_bias_rate": "share of samples with inside(t) <= eps: the attended region lies "
                          "essentially outside every box of the class",
    "range_bias_rate": "share of samples with eps < inside(t) < 1 - eps: the attended region "
                       "overlaps the box but is not contained in it",
    "contained_rate": "share with inside(t) >= 1 - eps; empty_rate: share of all-zero maps",
    "correct / wrong": "single-label: top-1 prediction equals the label; multi-label: the "
                       "class's sigmoid score > 0.5 for a present class",
    "swapped_gap": "top-1 (or mAP) on the context-consistent split `test` minus that on the "
                   "context-swapped split `test_swapped`, in points",
}



def _load(checkpoint, data_overrides):
    """(model, config, data bundle) of a checkpoint; `data_overrides` (Config -> Config) first."""
    from ..data import build_data
    from ..engine.checkpoint import load_model

    model, cfg = load_model(checkpoint, map_location="cpu")
    if data_overrides is not None:
        cfg = data_overrides(cfg)
    return model, cfg, build_data(cfg.data, train=False)


def _attach_boxes(ds, bundle, cfg, boxes_file) -> None:
    if not hasattr(ds, "samples"):
        raise UserError(f"--boxes {boxes_file}: a LOC_val_solution.csv file fits an imagenet or "
                        f"imagefolder split, not dataset '{cfg.data.name}'")
    from ..data.transforms import EVAL_CROP_FRACTION
    from .boxes import attach_imagenet_boxes

    fraction = EVAL_CROP_FRACTION if cfg.data.augment == "imagenet" else None
    attach_imagenet_boxes(ds, boxes_file, bundle.img_size, fraction)


def _family_summary(res: SplitResult, bundle, pixels) -> tuple[dict, dict | None, list | None]:
    """Channel gates per stage, SAN/LESA attention at `pixels`, IDA's class attention: the
    report's `family` part, the class-mean gates of each stage's last module (single-label) and
    the attention at the pixels (None where there is none to draw)."""
    fam = {"channel_gate_modules": sorted(res.gates), "spatial_modules": sorted(res.spatial),
           "class_spatial": res.ida}
    means = items = None
    if res.gates:
        single = not bundle.multilabel
        fam["gates"] = summarize_gates(res.gates, res.gate_labels if single else None, bundle.num_classes)
        if single:
            last_per_stage = {fam["gates"]["modules"][name]["stage"]: name for name in res.gates}
            means = {f"{s} ({n})": class_mean_gates(res.gates[n], res.gate_labels, bundle.num_classes)
                     for s, n in last_per_stage.items()}
    if res.spatial and pixels and res.figure["images"]:
        items = attention_at_pixels(res.spatial, pixels, res.feat_hw, sample=0)
        fam["pixels"] = [{"layer": it["layer"], "kind": it["kind"], "pixel": list(it["pixel"])} for it in items]
    elif pixels and not res.spatial:
        fam["pixels"] = "the network has no SAN/LESA attention to show at pixels"
    return fam, means, items


def run_analysis(checkpoint, out_dir=None, data_overrides=None, options: AnalysisOptions | None = None,
                 **fields) -> dict:
    """Analyse the checkpoint `checkpoint` (a run's best.safetensors or last.pt) as `options` say
    (an `AnalysisOptions`; its fields may also be given as keywords, e.g. `methods=("gradcam",)`).

    out_dir: where to write; default `<run folder>/analysis` (the run folder being the
    checkpoint's folder's parent). data_overrides: None or a callable Config -> Config applied to
    the checkpoint's config before the data is built (as `engine.evaluate.evaluate_checkpoint`).
    Writes report.md, bias.json and figures/*.png; returns the bias.json content.
    """
    o = dataclasses.replace(options or AnalysisOptions(), **fields)
    t0 = time.time()
    checkpoint = Path(checkpoint)
    model, cfg, bundle = _load(checkpoint, data_overrides)
    device = resolve_device(o.device)
    model = model.to(device).eval()
    if o.channels_last:
        model = model.to(memory_format=torch.channels_last)
    split = choose_split(bundle, o.split)
    ds = bundle.evals[split]
    if o.boxes_file:
        _attach_boxes(ds, bundle, cfg, o.boxes_file)
    if o.bias:
        check_boxes(bundle.has_boxes or bool(o.boxes_file), ds, split)
    out = Path(out_dir) if out_dir else checkpoint.resolve().parent.parent / "analysis"
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    t_load = time.time() - t0

    pixels = []
    if o.pixels:  # validate before the long pass: the feature-map size from one image
        with torch.no_grad():
            feats, nhwc = cam_features(model, next(batches(ds, bundle, 1, 1, device))[1])
        pixels = check_pixels(o.pixels, tuple(feats.shape[1:3] if nhwc else feats.shape[-2:]))
    recorder = AttentionRecorder(model)
    c_maps = time.process_time()
    with recorder:
        res = analyze_split(model, ds, bundle, o, recorder=recorder, workers=cfg.data.workers)
    t_maps = time.time() - t0 - t_load
    c_maps = time.process_time() - c_maps

    report = {
        "checkpoint": str(checkpoint), "model": cfg.model.name, "model_kwargs": cfg.model.kwargs,
        "dataset": cfg.data.name, "split": split, "num_images": res.num_images,
        "num_maps": res.num_maps, "target": "present classes" if bundle.multilabel else o.target,
        "feature_map": list(res.feat_hw), "eps": o.eps, "definitions": DEFINITIONS,
        "bias": {m: summarize(s, res.correct, o.thresholds) for m, s in res.stats.items()},
    }
    splits = split_scores(model, bundle, bundle.evals, split, res, o.num_samples,
                          max(o.batch_size, 256), device, cfg.data.workers)
    report["context"] = contextual_bias(splits, bundle.multilabel)  # over every eval split
    report["family"], gate_means, pixel_items = _family_summary(res, bundle, pixels)
    image = res.figure["images"][0] if res.figure["images"] else None
    fig_paths = family_figures(gate_means, pixel_items, image, res.feat_hw, bundle.class_names, fig_dir)
    fig_paths += map_figures(res.figure, report["bias"], o.bias, fig_dir)
    report["figures"] = [str(p.relative_to(out)) for p in fig_paths]
    report["timing_s"] = {"load": round(t_load, 3), "maps_and_stats": round(t_maps, 3),
                          "maps_and_stats_cpu": round(c_maps, 3), "total": round(time.time() - t0, 3)}
    report = jsonable(report)
    (out / "bias.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_report(report))
    return report

"""`run_analysis`: attention maps, bias statistics, contextual bias and family attention of one
checkpoint, written as `analysis/report.md`, `analysis/bias.json` and PNG figures; and
`bias_columns`, the few scalars `attnzoo compare --analyze` adds to its table.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from ..engine.device import resolve_device
from ..errors import UserError, choices_hint
from . import figures
from .bias import DEFAULT_EPS, DEFAULT_THRESHOLDS, cat_stats, map_box_stats, summarize
from .boxes import box_masks, dataset_boxes
from .cam import check_cam_model, check_method, compute_cams, upsample
from .cam import features as cam_features
from .context import contextual_bias
from .family import (AttentionRecorder, attention_at_pixels, check_pixels, class_mean_gates,
                     class_spatial_maps, summarize_gates)

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


# ------------------------------------------------------------------------------------- helpers

def _normaliser(bundle, device):
    mean = torch.tensor(bundle.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std, device=device).view(1, -1, 1, 1)

    def norm(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        return (x - mean) / std
    return norm


def _channels_last(model) -> bool:
    """True when the network's first 4-D weight is stored channels-last."""
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _batches(dataset, num: int, batch_size: int):
    """(indices, raw images (B, C, H, W) uint8 or float in [0, 1], targets) over the first `num`."""
    if hasattr(dataset, "images"):
        for start in range(0, num, batch_size):
            idx = torch.arange(start, min(num, start + batch_size))
            yield idx, dataset.images[idx], torch.as_tensor(dataset.targets)[idx]
        return
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, range(num)), batch_size=batch_size, shuffle=False)
    start = 0
    for images, targets in loader:
        idx = torch.arange(start, start + images.shape[0])
        start += images.shape[0]
        yield idx, images, targets


# --------------------------------------------------------------------------------- one split

@torch.no_grad()
def analyze_split(model, dataset, bundle, methods=("gradcam", "eigencam"), num_samples: int = 0,
                  batch_size: int = 256, device="cpu", thresholds=DEFAULT_THRESHOLDS,
                  eps: float = DEFAULT_EPS, target: str = "pred", num_figures: int = 16,
                  recorder: AttentionRecorder | None = None, gate_samples: int = 2000,
                  boxes: bool = True) -> dict:
    """Maps and per-map box statistics over the first `num_samples` (0: all) of `dataset`.

    Single-label: one map per image, of the predicted class (`target='pred'`) or of the label
    (`target='label'`). Multi-label: one map per present class. Returns per method the raw
    per-map statistics (see `bias.map_box_stats`), plus `correct` (M,), `scores` (N, K),
    `targets`, figure samples, recorded channel gates and spatial attention of the first batch.
    """
    if target not in ("pred", "label"):
        raise UserError(f"target '{target}': valid: pred, label")
    check_cam_model(model)
    methods = [check_method(m) for m in methods]
    device = resolve_device(device)
    norm = _normaliser(bundle, device)
    n_total = len(dataset)
    num = n_total if not num_samples or num_samples > n_total else num_samples
    if num == 0:
        raise UserError("the evaluated split is empty: nothing to analyse")
    stats = {m: [] for m in methods}
    correct, scores, labels_all = [], [], []
    fig = {"images": [], "maps": {m: [] for m in methods}, "boxes": [], "titles": []}
    gates, gate_labels, spatial, feat_hw = {}, [], {}, None
    ida_used = False
    cl = _channels_last(model)
    for bi, (idx, raw, tgt) in enumerate(_batches(dataset, num, batch_size)):
        x = norm(raw)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        if recorder is not None:
            recorder.clear()
        if bundle.multilabel:
            pos = torch.as_tensor(tgt).float() > 0.5
            index, classes = pos.nonzero(as_tuple=True)
            out = compute_cams(model, x, methods, targets=classes, index=index, recorder=recorder)
            sc = torch.sigmoid(out["logits"].float()).cpu()
            ok = sc[index, classes] > 0.5
        else:
            index = None
            if target == "label":
                classes = torch.as_tensor(tgt).long()
                out = compute_cams(model, x, methods, targets=classes, recorder=recorder)
            else:
                out = compute_cams(model, x, methods, recorder=recorder)
                classes = out["targets"].cpu()
            sc = out["logits"].float().cpu()
            ok = sc.argmax(1) == torch.as_tensor(tgt).long()
        feat_hw = out["feat_hw"]
        map_idx = idx if index is None else idx[index]
        h, w = x.shape[-2:]
        masks = None
        if boxes:
            box_list = dataset_boxes(dataset, map_idx.tolist(), classes if bundle.multilabel else None,
                                     img_hw=(h, w))
            masks = box_masks(box_list, h, w)
        maps = {m: out[m] for m in methods}
        if recorder is not None:
            ida = class_spatial_maps(recorder.records, classes.to(torch.long), feat_hw, index)
            if ida is not None:
                ida_used = True
                maps["ida"] = upsample(ida, (h, w))
                stats.setdefault("ida", [])
                fig["maps"].setdefault("ida", [])
            if bi == 0:
                spatial = {n: r for n, r in recorder.records.items() if r["kind"] in ("local", "global")}
                recorder.kinds = ("channel", "class_spatial")  # big tensors: first batch only
            taken = sum(len(g) for g in gate_labels)
            if taken < gate_samples:
                keep = min(gate_samples - taken, len(idx))
                for name, rec in recorder.of_kind("channel").items():
                    gates.setdefault(name, []).append(rec["tensors"][0][:keep])
                # multi-label: no single class per image (-1), so no class selectivity
                lab = torch.full((len(idx),), -1) if bundle.multilabel else torch.as_tensor(tgt).long()
                gate_labels.append(lab[:keep])
                if taken + keep >= gate_samples:  # enough gates: stop recomputing them
                    recorder.kinds = tuple(k for k in recorder.kinds if k != "channel")
        for m, mp in maps.items():
            if masks is not None:
                stats[m].append(map_box_stats(mp, masks.to(mp.device), thresholds, eps))
        correct.append(ok)
        scores.append(sc)
        labels_all.append(torch.as_tensor(tgt))
        room = num_figures - len(fig["titles"])
        if room > 0:
            take = list(range(min(room, map_idx.shape[0])))
            names = bundle.class_names or []
            for j in take:
                i = int(map_idx[j])
                name = lambda c: names[c] if c < len(names) else str(c)  # noqa: E731
                if bundle.multilabel:
                    title = f"#{i} {name(int(classes[j]))} {'found' if ok[j] else 'missed'}"
                else:
                    label, pred = int(torch.as_tensor(tgt)[j]), int(sc[j].argmax())
                    title = f"#{i} {name(label)}" + ("" if label == pred else f"\n(pred {name(pred)})")
                fig["titles"].append(title)
                fig["images"].append(raw[index[j] if index is not None else j].cpu())
                fig["boxes"].append(box_list[j] if boxes else None)
                for m, mp in maps.items():
                    fig["maps"][m].append(mp[j].cpu())
    result = {
        "methods": list(stats) if boxes else [],
        "stats": {m: cat_stats(s) for m, s in stats.items() if s},
        "correct": torch.cat(correct), "scores": torch.cat(scores), "targets": torch.cat(labels_all),
        "num_images": num, "num_maps": int(sum(len(c) for c in correct)), "feat_hw": feat_hw,
        "figure": fig, "spatial": spatial, "ida": ida_used,
        "gates": {n: torch.cat(g) for n, g in gates.items()},
        "gate_labels": torch.cat(gate_labels) if gate_labels else torch.zeros(0, dtype=torch.long),
    }
    return result


@torch.no_grad()
def predict(model, dataset, bundle, num_samples: int = 0, batch_size: int = 512, device="cpu"):
    """(scores (N, K), targets) of the first `num_samples` (0: all) of `dataset`."""
    device = resolve_device(device)
    norm = _normaliser(bundle, device)
    num = len(dataset) if not num_samples else min(num_samples, len(dataset))
    scores, targets = [], []
    cl = _channels_last(model)
    for _, raw, tgt in _batches(dataset, num, batch_size):
        x = norm(raw)
        logits = model(x.contiguous(memory_format=torch.channels_last) if cl else x).float().cpu()
        scores.append(torch.sigmoid(logits) if bundle.multilabel else logits)
        targets.append(torch.as_tensor(tgt))
    return torch.cat(scores), torch.cat(targets)


# ------------------------------------------------------------------------------- entry points

def _choose_split(bundle, split):
    if not bundle.evals:
        raise UserError("the dataset has no evaluation split to analyse")
    if split is None:
        return next(iter(bundle.evals))
    if split not in bundle.evals:
        raise UserError(f"unknown split '{split}'; {choices_hint(split, bundle.evals)}")
    return split


def _check_boxes(bundle, dataset, split):
    if not bundle.has_boxes or getattr(dataset, "boxes", None) is None:
        raise UserError(f"split '{split}' has no object boxes; bias statistics need a dataset with "
                        "boxes: synthetic, synthetic_multilabel, imagenet (with LOC_val_solution.csv), "
                        "voc or coco")


def bias_columns(model, bundle, split=None, method: str = "gradcam", num_samples: int = 2000,
                 threshold: float = 0.5, eps: float = DEFAULT_EPS, batch_size: int = 256,
                 device="cpu") -> dict:
    """Scalar attention-bias columns of `model` (eval mode) on `bundle` for a comparison table.

    Returns {energy_in_box, pointing, iou, position_bias_rate, range_bias_rate (all at
    `threshold`, over `num_samples` images of `split`, default the first eval split), and, when
    the bundle has `test` and `test_swapped`, swapped_gap (points of top-1 or mAP)}.
    """
    split = _choose_split(bundle, split)
    ds = bundle.evals[split]
    _check_boxes(bundle, ds, split)
    model.eval()
    res = analyze_split(model, ds, bundle, (method,), num_samples, batch_size, device,
                        thresholds=(threshold,), eps=eps, num_figures=0)
    s = summarize(res["stats"][method], res["correct"], (threshold,), threshold)["all"]
    t = f"@{float(threshold):g}"
    cols = {"energy_in_box": s["energy_in_box"], "pointing": s["pointing"], "iou": s["iou" + t],
            "position_bias_rate": s["position_bias_rate" + t], "range_bias_rate": s["range_bias_rate" + t]}
    if "test" in bundle.evals and "test_swapped" in bundle.evals:
        splits = {}
        for name in ("test", "test_swapped"):
            if name == split:
                splits[name] = (res["scores"], res["targets"])
            else:
                splits[name] = predict(model, bundle.evals[name], bundle, num_samples, batch_size, device)
        cols["swapped_gap"] = contextual_bias(splits, bundle.multilabel, num_pairs=0)["swapped_gap"]
    return cols


def _load(checkpoint, data_overrides):
    from ..data import build_data
    from ..engine.checkpoint import load_model
    from ..engine.config import config_from_dict, config_to_dict

    model, cfg = load_model(checkpoint, map_location="cpu")
    if callable(data_overrides):
        cfg = data_overrides(cfg) or cfg
    elif data_overrides:
        data = config_to_dict(cfg)
        merged = {**data["data"], **data_overrides}
        if isinstance(data_overrides.get("options"), dict):
            merged["options"] = {**data["data"].get("options", {}), **data_overrides["options"]}
        data["data"] = merged
        cfg = config_from_dict(data)
    bundle = build_data(cfg.data, train=False)
    return model, cfg, bundle


def run_analysis(checkpoint, out_dir=None, data_overrides=None, num_samples: int = 0,
                 methods=("gradcam", "eigencam"), split=None, thresholds=DEFAULT_THRESHOLDS,
                 eps: float = DEFAULT_EPS, target: str = "pred", pixels=None,
                 batch_size: int = 256, device="cpu", num_figures: int = 16,
                 bias: bool = True, boxes_file=None, channels_last: bool = True) -> dict:
    """Analyse the checkpoint `checkpoint` (a run's best.safetensors or last.pt).

    Args:
        out_dir: where to write; default `<run folder>/analysis` (the run folder being the
            checkpoint's folder's parent).
        data_overrides: None, a dict of `data` config fields (e.g. {"name": "synthetic",
            "options": {"num_test": 500}}), or a callable Config -> Config.
        num_samples: images of the analysed split (0: all); also caps the other splits.
        methods: CAM methods (gradcam, eigencam, scorecam); IDA's class attention is added when
            the network has it.
        split: the analysed eval split (default: the first, `test` for the synthetic sets).
        thresholds, eps: see docs/analysis.md. target: 'pred' or 'label' (single-label).
        pixels: (row, col) pixels of the final feature map for SAN/LESA attention figures.
        bias: False skips the box statistics (datasets without boxes).
        boxes_file: ImageNet `LOC_val_solution.csv` for an imagenet / imagefolder split.
        channels_last: run the network in channels-last memory format (faster).
    Writes report.md, bias.json and figures/*.png; returns the bias.json content.
    """
    t0 = time.time()
    checkpoint = Path(checkpoint)
    model, cfg, bundle = _load(checkpoint, data_overrides)
    device = resolve_device(device)
    model = model.to(device).eval()
    if channels_last:  # faster convolutions on CPU and GPU; the maps are the same
        model = model.to(memory_format=torch.channels_last)
    split = _choose_split(bundle, split)
    ds = bundle.evals[split]
    if boxes_file:
        if not hasattr(ds, "samples"):
            raise UserError(f"--boxes {boxes_file}: a LOC_val_solution.csv file fits an imagenet or "
                            f"imagefolder split, not dataset '{cfg.data.name}'")
        from .boxes import attach_imagenet_boxes

        from ..data.transforms import EVAL_CROP_FRACTION

        fraction = EVAL_CROP_FRACTION if cfg.data.augment == "imagenet" else None
        attach_imagenet_boxes(ds, boxes_file, bundle.img_size, fraction)
        bundle.has_boxes = True
    if bias:
        _check_boxes(bundle, ds, split)
    out = Path(out_dir) if out_dir else checkpoint.resolve().parent.parent / "analysis"
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    t_load = time.time() - t0

    pix = []
    if pixels:  # validate before the long pass: the feature-map size from one image
        with torch.no_grad():
            first = next(_batches(ds, 1, 1))[1]
            feats, nhwc = cam_features(model, _normaliser(bundle, device)(first))
        pix = check_pixels(pixels, tuple(feats.shape[1:3] if nhwc else feats.shape[-2:]))
    recorder = AttentionRecorder(model)
    c_maps = time.process_time()
    with recorder:
        res = analyze_split(model, ds, bundle, methods, num_samples, batch_size, device, thresholds,
                            eps, target, num_figures, recorder=recorder, boxes=bias)
    t_maps = time.time() - t0 - t_load
    c_maps = time.process_time() - c_maps
    feat_hw = res["feat_hw"]

    report = {
        "checkpoint": str(checkpoint), "model": cfg.model.name, "model_kwargs": cfg.model.kwargs,
        "dataset": cfg.data.name, "split": split, "num_images": res["num_images"],
        "num_maps": res["num_maps"], "target": "present classes" if bundle.multilabel else target,
        "feature_map": list(feat_hw), "eps": eps, "definitions": DEFINITIONS,
        "bias": {m: summarize(s, res["correct"], thresholds) for m, s in res["stats"].items()},
    }

    # contextual bias over every eval split
    splits = {}
    for name, d in bundle.evals.items():
        if name == split:
                splits[name] = (res["scores"], res["targets"])
        else:
            splits[name] = predict(model, d, bundle, num_samples, max(batch_size, 256), device)
    report["context"] = contextual_bias(splits, bundle.multilabel)

    # family attention
    fam = {"channel_gate_modules": sorted(res["gates"]), "spatial_modules": sorted(res["spatial"]),
           "class_spatial": res["ida"]}
    fig_paths = []
    if res["gates"]:
        single = not bundle.multilabel
        fam["gates"] = summarize_gates(res["gates"], res["gate_labels"] if single else None,
                                       bundle.num_classes)
        if single:
            last_per_stage = {}
            for name in res["gates"]:
                last_per_stage[fam["gates"]["modules"][name]["stage"]] = name
            means = {f"{s} ({n})": class_mean_gates(res["gates"][n], res["gate_labels"], bundle.num_classes)
                     for s, n in last_per_stage.items()}
            fig_paths.append(figures.gate_heatmaps(means, fig_dir / "gates.png", bundle.class_names))
    if res["spatial"] and pix and res["figure"]["images"]:
        items = attention_at_pixels(res["spatial"], pix, feat_hw, sample=0)
        fam["pixels"] = [{"layer": it["layer"], "kind": it["kind"], "pixel": list(it["pixel"])} for it in items]
        fig_paths.append(figures.pixel_attention(res["figure"]["images"][0], items, feat_hw,
                                                 fig_dir / "pixel_attention.png"))
    elif pix and not res["spatial"]:
        fam["pixels"] = "the network has no SAN/LESA attention to show at pixels"
    report["family"] = fam

    f = res["figure"]
    if f["titles"]:
        maps = {m: torch.stack(v) for m, v in f["maps"].items() if v}
        fig_paths.append(figures.cam_grid(torch.stack(f["images"]), maps,
                                          f["boxes"] if bias else None, f["titles"], fig_dir / "maps.png"))
    if report["bias"]:
        fig_paths.append(figures.bias_curves(report["bias"], fig_dir / "bias_curves.png"))
    report["figures"] = [str(p.relative_to(out)) for p in fig_paths]
    report["timing_s"] = {"load": round(t_load, 3), "maps_and_stats": round(t_maps, 3),
                          "maps_and_stats_cpu": round(c_maps, 3), "total": round(time.time() - t0, 3)}
    report = _clean(json.loads(json.dumps(report, default=_json_default)))
    (out / "bias.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_report(report))
    return report


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

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


@dataclasses.dataclass
class AnalysisOptions:
    """What `run_analysis` computes; the flags of `attnzoo analyze`.

    methods: CAM methods (gradcam, eigencam, scorecam); IDA's class attention is added when the
    network has it. num_samples: images of the analysed split (0: all); also caps the other splits.
    split: the analysed eval split (default: the first, `test` for the synthetic sets).
    thresholds, eps: see docs/analysis.md. target: 'pred' or 'label' (single-label).
    pixels: (row, col) pixels of the final feature map for SAN/LESA attention figures.
    bias: False skips the box statistics (datasets without boxes).
    boxes_file: ImageNet `LOC_val_solution.csv` for an imagenet / imagefolder split.
    channels_last: run the network in channels-last memory format (faster; the maps are the same).
    """

    methods: tuple = ("gradcam", "eigencam")
    num_samples: int = 0
    split: str | None = None
    thresholds: tuple = DEFAULT_THRESHOLDS
    eps: float = DEFAULT_EPS
    target: str = "pred"
    pixels: list | None = None
    batch_size: int = 256
    device: str = "cpu"
    num_figures: int = 16
    bias: bool = True
    boxes_file: str | None = None
    channels_last: bool = True


# ------------------------------------------------------------------------------------- helpers

def _channels_last(model) -> bool:
    """True when the network's first 4-D weight is stored channels-last."""
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _batches(dataset, bundle, num: int, batch_size: int, device, workers: int = 0):
    """(indices (B,), normalised images (B, C, S, S) on `device`, targets) over the first `num`
    samples, read by training's evaluation loader."""
    from ..data import build_loader
    from ..engine.config import DataConfig

    # augment "none": in-memory boxes are in stored pixels, so no evaluation center crop
    cfg = DataConfig(eval_batch_size=max(1, min(batch_size, num)), workers=workers, augment="none")
    loader = build_loader(dataset, bundle, cfg, train=False, seed=0, device=device)
    start, skipped = 0, loader.skipped_images  # earlier loaders' count, e.g. training's
    for images, targets in loader:
        if loader.skipped_images > skipped:
            raise UserError(f"unreadable image(s) in {getattr(dataset, 'name', '')}: the analysis matches "
                            "boxes and figures to images by position; remove them")
        images, targets = images[:num - start], targets[:num - start]
        yield torch.arange(start, start + len(images)), images.to(device), targets
        start += len(images)
        if start >= num:
            return


def _unnormalise(x: torch.Tensor, bundle) -> torch.Tensor:
    """Normalised images (B, C, H, W) -> float in [0, 1] for figures."""
    mean = torch.tensor(bundle.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std, device=x.device).view(1, -1, 1, 1)
    return (x * std + mean).clamp(0, 1)


# --------------------------------------------------------------------------------- one split

class _SplitAnalysis:
    """Accumulates maps, statistics, scores, figures and family attention batch by batch."""

    def __init__(self, methods: list, bundle, options: AnalysisOptions, recorder, gate_samples: int):
        self.methods, self.bundle, self.options = methods, bundle, options
        self.recorder, self.gate_samples = recorder, gate_samples
        self.stats = {m: [] for m in methods}
        self.correct, self.scores, self.labels = [], [], []
        self.figure = {"images": [], "maps": {m: [] for m in methods}, "boxes": [], "titles": []}
        self.gates, self.gate_labels, self.spatial = {}, [], {}
        self.feat_hw, self.ida_used = None, False

    def explain(self, model, x, targets):
        """CAMs of one batch: (cam output, explained classes (M,), image of each map or None,
        scores, whether each map's class is predicted right (M,))."""
        methods, recorder = self.methods, self.recorder
        if self.bundle.multilabel:  # one map per present class
            index, classes = (torch.as_tensor(targets).float() > 0.5).nonzero(as_tuple=True)
            out = compute_cams(model, x, methods, targets=classes, index=index, recorder=recorder)
            scores = torch.sigmoid(out["logits"].float()).cpu()
            return out, classes, index, scores, scores[index, classes] > 0.5
        labels = torch.as_tensor(targets).long()
        if self.options.target == "label":
            out = compute_cams(model, x, methods, targets=labels, recorder=recorder)
            classes = labels
        else:
            out = compute_cams(model, x, methods, recorder=recorder)
            classes = out["targets"].cpu()
        scores = out["logits"].float().cpu()
        return out, classes, None, scores, scores.argmax(1) == labels

    def add(self, model, idx, x, targets, dataset) -> None:
        if self.recorder is not None:
            self.recorder.clear()
        out, classes, index, scores, ok = self.explain(model, x, targets)
        self.feat_hw = out["feat_hw"]
        map_idx = idx if index is None else idx[index]
        h, w = x.shape[-2:]
        box_list = None
        maps = {m: out[m] for m in self.methods}
        if self.options.bias:
            box_list = dataset_boxes(dataset, map_idx.tolist(), classes if self.bundle.multilabel else None,
                                     img_hw=(h, w))
        if self.recorder is not None:
            self._record_family(maps, classes, index, targets, len(idx), (h, w))
        if box_list is not None:
            masks = box_masks(box_list, h, w)
            for m, mp in maps.items():
                self.stats[m].append(map_box_stats(mp, masks.to(mp.device), self.options.thresholds,
                                                   self.options.eps))
        self.correct.append(ok)
        self.scores.append(scores)
        self.labels.append(torch.as_tensor(targets))
        self._add_figures(x, maps, map_idx, classes, index, targets, scores, ok, box_list)

    def _record_family(self, maps, classes, index, targets, n: int, hw) -> None:
        """IDA's class attention as one more map; SAN/LESA spatial attention of the first batch;
        channel gates of the first `gate_samples` images."""
        recorder = self.recorder
        ida = class_spatial_maps(recorder.records, classes.to(torch.long), self.feat_hw, index)
        if ida is not None:
            self.ida_used = True
            maps["ida"] = upsample(ida, hw)
            self.stats.setdefault("ida", [])
            self.figure["maps"].setdefault("ida", [])
        if not self.correct:  # first batch
            self.spatial = {k: r for k, r in recorder.records.items() if r["kind"] in ("local", "global")}
            recorder.kinds = ("channel", "class_spatial")  # big tensors: first batch only
        taken = sum(len(g) for g in self.gate_labels)
        if taken >= self.gate_samples:
            return
        keep = min(self.gate_samples - taken, n)
        for name, rec in recorder.of_kind("channel").items():
            self.gates.setdefault(name, []).append(rec["tensors"][0][:keep])
        # multi-label: no single class per image (-1), so no class selectivity
        labels = torch.full((n,), -1) if self.bundle.multilabel else torch.as_tensor(targets).long()
        self.gate_labels.append(labels[:keep])
        if taken + keep >= self.gate_samples:  # enough gates: stop recomputing them
            recorder.kinds = tuple(k for k in recorder.kinds if k != "channel")

    def _add_figures(self, x, maps, map_idx, classes, index, targets, scores, ok, box_list) -> None:
        room = self.options.num_figures - len(self.figure["titles"])
        names = self.bundle.class_names or []

        def name(c: int) -> str:
            return names[c] if c < len(names) else str(c)

        for j in range(min(max(room, 0), map_idx.shape[0])):
            if self.bundle.multilabel:
                title = f"#{int(map_idx[j])} {name(int(classes[j]))} {'found' if ok[j] else 'missed'}"
            else:
                label, pred = int(torch.as_tensor(targets)[j]), int(scores[j].argmax())
                title = f"#{int(map_idx[j])} {name(label)}" + ("" if label == pred else f"\n(pred {name(pred)})")
            self.figure["titles"].append(title)
            image = x[index[j] if index is not None else j]
            self.figure["images"].append(_unnormalise(image[None], self.bundle)[0].cpu())
            self.figure["boxes"].append(box_list[j] if box_list is not None else None)
            for m, mp in maps.items():
                self.figure["maps"][m].append(mp[j].cpu())

    def result(self, num: int) -> dict:
        return {
            "methods": list(self.stats) if self.options.bias else [],
            "stats": {m: cat_stats(s) for m, s in self.stats.items() if s},
            "correct": torch.cat(self.correct), "scores": torch.cat(self.scores),
            "targets": torch.cat(self.labels), "num_images": num,
            "num_maps": int(sum(len(c) for c in self.correct)), "feat_hw": self.feat_hw,
            "figure": self.figure, "spatial": self.spatial, "ida": self.ida_used,
            "gates": {n: torch.cat(g) for n, g in self.gates.items()},
            "gate_labels": torch.cat(self.gate_labels) if self.gate_labels else torch.zeros(0, dtype=torch.long),
        }


@torch.no_grad()
def analyze_split(model, dataset, bundle, options: AnalysisOptions = AnalysisOptions(),
                  recorder: AttentionRecorder | None = None, gate_samples: int = 2000,
                  workers: int = 0) -> dict:
    """Maps and per-map box statistics over the first `options.num_samples` (0: all) of `dataset`.

    Single-label: one map per image, of the predicted class (`target='pred'`) or of the label
    (`target='label'`). Multi-label: one map per present class. Returns per method the raw
    per-map statistics (see `bias.map_box_stats`), plus `correct` (M,), `scores` (N, K),
    `targets`, figure samples, recorded channel gates and spatial attention of the first batch.
    """
    if options.target not in ("pred", "label"):
        raise UserError(f"target '{options.target}': valid: pred, label")
    check_cam_model(model)
    methods = [check_method(m) for m in options.methods]
    device = resolve_device(options.device)
    num = min(options.num_samples or len(dataset), len(dataset))
    if num == 0:
        raise UserError("the evaluated split is empty: nothing to analyse")
    split = _SplitAnalysis(methods, bundle, options, recorder, gate_samples)
    cl = _channels_last(model)
    for idx, x, targets in _batches(dataset, bundle, num, options.batch_size, device, workers):
        split.add(model, idx, x.contiguous(memory_format=torch.channels_last) if cl else x, targets, dataset)
    return split.result(num)


@torch.no_grad()
def predict(model, dataset, bundle, num_samples: int = 0, batch_size: int = 512, device="cpu",
            workers: int = 0):
    """(scores (N, K), targets) of the first `num_samples` (0: all) of `dataset`."""
    device = resolve_device(device)
    num = min(num_samples or len(dataset), len(dataset))
    scores, targets = [], []
    cl = _channels_last(model)
    for _, x, tgt in _batches(dataset, bundle, num, batch_size, device, workers):
        logits = model(x.contiguous(memory_format=torch.channels_last) if cl else x).float().cpu()
        scores.append(torch.sigmoid(logits) if bundle.multilabel else logits)
        targets.append(torch.as_tensor(tgt))
    return torch.cat(scores), torch.cat(targets)


# ------------------------------------------------------------------------------- entry points

def _split_scores(model, bundle, names, split, res, num_samples, batch_size, device, workers=0) -> dict:
    """{name: (scores, targets)} of the eval splits `names`: the analysed `split`'s from its
    `analyze_split` result `res`, the others predicted."""
    return {name: (res["scores"], res["targets"]) if name == split else
            predict(model, bundle.evals[name], bundle, num_samples, batch_size, device, workers)
            for name in names}


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
    options = AnalysisOptions(methods=(method,), num_samples=num_samples, thresholds=(threshold,),
                              eps=eps, batch_size=batch_size, device=device, num_figures=0)
    res = analyze_split(model, ds, bundle, options)
    s = summarize(res["stats"][method], res["correct"], (threshold,), threshold)["all"]
    t = f"@{float(threshold):g}"
    cols = {"energy_in_box": s["energy_in_box"], "pointing": s["pointing"], "iou": s["iou" + t],
            "position_bias_rate": s["position_bias_rate" + t], "range_bias_rate": s["range_bias_rate" + t]}
    if "test" in bundle.evals and "test_swapped" in bundle.evals:
        splits = _split_scores(model, bundle, ("test", "test_swapped"), split, res, num_samples,
                               batch_size, device)
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


def _attach_boxes(ds, bundle, cfg, boxes_file) -> None:
    if not hasattr(ds, "samples"):
        raise UserError(f"--boxes {boxes_file}: a LOC_val_solution.csv file fits an imagenet or "
                        f"imagefolder split, not dataset '{cfg.data.name}'")
    from ..data.transforms import EVAL_CROP_FRACTION
    from .boxes import attach_imagenet_boxes

    fraction = EVAL_CROP_FRACTION if cfg.data.augment == "imagenet" else None
    attach_imagenet_boxes(ds, boxes_file, bundle.img_size, fraction)
    bundle.has_boxes = True


def _family_report(res, bundle, pixels, fig_dir) -> tuple[dict, list]:
    """Channel gates per stage, SAN/LESA attention at `pixels`, IDA's class attention: the
    report's `family` part and its figures."""
    fam = {"channel_gate_modules": sorted(res["gates"]), "spatial_modules": sorted(res["spatial"]),
           "class_spatial": res["ida"]}
    fig_paths = []
    if res["gates"]:
        single = not bundle.multilabel
        fam["gates"] = summarize_gates(res["gates"], res["gate_labels"] if single else None,
                                       bundle.num_classes)
        if single:
            last_per_stage = {fam["gates"]["modules"][name]["stage"]: name for name in res["gates"]}
            means = {f"{s} ({n})": class_mean_gates(res["gates"][n], res["gate_labels"], bundle.num_classes)
                     for s, n in last_per_stage.items()}
            fig_paths.append(figures.gate_heatmaps(means, fig_dir / "gates.png", bundle.class_names))
    if res["spatial"] and pixels and res["figure"]["images"]:
        items = attention_at_pixels(res["spatial"], pixels, res["feat_hw"], sample=0)
        fam["pixels"] = [{"layer": it["layer"], "kind": it["kind"], "pixel": list(it["pixel"])} for it in items]
        fig_paths.append(figures.pixel_attention(res["figure"]["images"][0], items, res["feat_hw"],
                                                 fig_dir / "pixel_attention.png"))
    elif pixels and not res["spatial"]:
        fam["pixels"] = "the network has no SAN/LESA attention to show at pixels"
    return fam, fig_paths


def _map_figures(figure: dict, bias: dict, with_boxes: bool, fig_dir: Path) -> list:
    """maps.png (images, maps and boxes) and bias_curves.png, where there is something to draw."""
    paths = []
    if figure["titles"]:
        maps = {m: torch.stack(v) for m, v in figure["maps"].items() if v}
        paths.append(figures.cam_grid(torch.stack(figure["images"]), maps, figure["boxes"] if with_boxes else None,
                                      figure["titles"], fig_dir / "maps.png"))
    if bias:
        paths.append(figures.bias_curves(bias, fig_dir / "bias_curves.png"))
    return paths


def run_analysis(checkpoint, out_dir=None, data_overrides=None, options: AnalysisOptions | None = None,
                 **fields) -> dict:
    """Analyse the checkpoint `checkpoint` (a run's best.safetensors or last.pt) as `options` say
    (an `AnalysisOptions`; its fields may also be given as keywords, e.g. `methods=("gradcam",)`).

    out_dir: where to write; default `<run folder>/analysis` (the run folder being the
    checkpoint's folder's parent). data_overrides: None, a dict of `data` config fields (e.g.
    {"name": "synthetic", "options": {"num_test": 500}}), or a callable Config -> Config.
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
    split = _choose_split(bundle, o.split)
    ds = bundle.evals[split]
    if o.boxes_file:
        _attach_boxes(ds, bundle, cfg, o.boxes_file)
    if o.bias:
        _check_boxes(bundle, ds, split)
    out = Path(out_dir) if out_dir else checkpoint.resolve().parent.parent / "analysis"
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    t_load = time.time() - t0

    pixels = []
    if o.pixels:  # validate before the long pass: the feature-map size from one image
        with torch.no_grad():
            feats, nhwc = cam_features(model, next(_batches(ds, bundle, 1, 1, device))[1])
        pixels = check_pixels(o.pixels, tuple(feats.shape[1:3] if nhwc else feats.shape[-2:]))
    recorder = AttentionRecorder(model)
    c_maps = time.process_time()
    with recorder:
        res = analyze_split(model, ds, bundle, o, recorder=recorder, workers=cfg.data.workers)
    t_maps = time.time() - t0 - t_load
    c_maps = time.process_time() - c_maps

    report = {
        "checkpoint": str(checkpoint), "model": cfg.model.name, "model_kwargs": cfg.model.kwargs,
        "dataset": cfg.data.name, "split": split, "num_images": res["num_images"],
        "num_maps": res["num_maps"], "target": "present classes" if bundle.multilabel else o.target,
        "feature_map": list(res["feat_hw"]), "eps": o.eps, "definitions": DEFINITIONS,
        "bias": {m: summarize(s, res["correct"], o.thresholds) for m, s in res["stats"].items()},
    }
    splits = _split_scores(model, bundle, bundle.evals, split, res, o.num_samples,
                           max(o.batch_size, 256), device, cfg.data.workers)
    report["context"] = contextual_bias(splits, bundle.multilabel)  # over every eval split
    report["family"], fig_paths = _family_report(res, bundle, pixels, fig_dir)
    fig_paths += _map_figures(res["figure"], report["bias"], o.bias, fig_dir)
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

"""Collecting: run a network over an evaluation split and gather, batch by batch, what the
analysis computes from (class activation maps and their box statistics, scores, channel gates,
spatial attention, figure samples). No summary and no rendering here.
"""
from __future__ import annotations

import dataclasses

import torch

from ..engine.device import resolve_device
from ..errors import UserError, choices_hint
from .bias import DEFAULT_EPS, DEFAULT_THRESHOLDS, cat_stats, map_box_stats
from .boxes import box_masks, dataset_boxes
from .cam import check_cam_model, check_method, compute_cams, upsample
from .family import AttentionRecorder, class_spatial_maps


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


@dataclasses.dataclass
class SplitResult:
    """What `analyze_split` gathered over `num_images` images (`num_maps` maps).

    methods: the CAM methods with box statistics ([] without boxes); stats: per method the raw
    per-map statistics (`bias.map_box_stats`, concatenated); correct (M,): whether each map's
    class is predicted right; scores (N, K) and targets of the images; feat_hw: the final
    feature map's size; figure: {images, maps {method: [...]}, boxes, titles} of the first
    `num_figures` maps; spatial: SAN/LESA attention records of the first batch; ida: whether
    IDA's class attention was added as a map; gates {module: (S, C)} and gate_labels (S,):
    channel gates of the first images and their labels (-1: multi-label).
    """
    methods: list
    stats: dict
    correct: torch.Tensor
    scores: torch.Tensor
    targets: torch.Tensor
    num_images: int
    num_maps: int
    feat_hw: tuple
    figure: dict
    spatial: dict
    ida: bool
    gates: dict
    gate_labels: torch.Tensor


# ------------------------------------------------------------------------------------- batches

def _channels_last(model) -> bool:
    """True when the network's first 4-D weight is stored channels-last."""
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def batches(dataset, bundle, num: int, batch_size: int, device, workers: int = 0):
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


def unnormalise(x: torch.Tensor, bundle) -> torch.Tensor:
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
            self.figure["images"].append(unnormalise(image[None], self.bundle)[0].cpu())
            self.figure["boxes"].append(box_list[j] if box_list is not None else None)
            for m, mp in maps.items():
                self.figure["maps"][m].append(mp[j].cpu())

    def result(self, num: int) -> SplitResult:
        return SplitResult(
            methods=list(self.stats) if self.options.bias else [],
            stats={m: cat_stats(s) for m, s in self.stats.items() if s},
            correct=torch.cat(self.correct), scores=torch.cat(self.scores),
            targets=torch.cat(self.labels), num_images=num,
            num_maps=int(sum(len(c) for c in self.correct)), feat_hw=self.feat_hw,
            figure=self.figure, spatial=self.spatial, ida=self.ida_used,
            gates={n: torch.cat(g) for n, g in self.gates.items()},
            gate_labels=torch.cat(self.gate_labels) if self.gate_labels else torch.zeros(0, dtype=torch.long))


@torch.no_grad()
def analyze_split(model, dataset, bundle, options: AnalysisOptions | None = None,
                  recorder: AttentionRecorder | None = None, gate_samples: int = 2000,
                  workers: int = 0) -> SplitResult:
    """Maps and per-map box statistics over the first `options.num_samples` (0: all) of `dataset`.

    Single-label: one map per image, of the predicted class (`target='pred'`) or of the label
    (`target='label'`). Multi-label: one map per present class. Returns a `SplitResult`.
    """
    options = options or AnalysisOptions()
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
    for idx, x, targets in batches(dataset, bundle, num, options.batch_size, device, workers):
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
    for _, x, tgt in batches(dataset, bundle, num, batch_size, device, workers):
        logits = model(x.contiguous(memory_format=torch.channels_last) if cl else x).float().cpu()
        scores.append(torch.sigmoid(logits) if bundle.multilabel else logits)
        targets.append(torch.as_tensor(tgt))
    return torch.cat(scores), torch.cat(targets)


# ------------------------------------------------------------------------ the splits to read

def choose_split(bundle, split):
    """The analysed eval split: `split`, or the first one; UserError naming the valid ones."""
    if not bundle.evals:
        raise UserError("the dataset has no evaluation split to analyse")
    if split is None:
        return next(iter(bundle.evals))
    if split not in bundle.evals:
        raise UserError(f"unknown split '{split}'; {choices_hint(split, bundle.evals)}")
    return split


def check_boxes(has_boxes: bool, dataset, split) -> None:
    """UserError unless the split's images have object boxes (bias statistics need them)."""
    if not has_boxes or getattr(dataset, "boxes", None) is None:
        raise UserError(f"split '{split}' has no object boxes; bias statistics need a dataset with "
                        "boxes: synthetic, synthetic_multilabel, imagenet (with LOC_val_solution.csv), "
                        "voc or coco")


def split_scores(model, bundle, names, split, res, num_samples, batch_size, device, workers=0) -> dict:
    """{name: (scores, targets)} of the eval splits `names`: the analysed `split`'s from its
    `analyze_split` result `res`, the others predicted."""
    return {name: (res.scores, res.targets) if name == split else
            predict(model, bundle.evals[name], bundle, num_samples, batch_size, device, workers)
            for name in names}

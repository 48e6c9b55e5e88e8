"""Evaluation of a model on every eval split: top-1/top-5 and loss, or the multi-label metrics.

Counts are summed (single-label) or scores gathered (multi-label) across processes, so the numbers
are those of the whole split whatever the world size.
"""
from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassAccuracy

from .distributed import all_gather_cat, all_reduce_sum


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA (bf16 also on CPU); a no-op context otherwise."""
    if amp == "none" or (device.type != "cuda" and amp != "bf16"):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model, loader, device, multilabel: bool, amp: str = "none",
             channels_last: bool = False) -> dict:
    """Metrics of `model` over `loader`; everything accumulates on the device and is read once at
    the end (`amp` and `channels_last` as resolved for the device: "none"/"bf16"/"fp16", bool)."""
    model.eval()
    scores, targets = [], []  # multi-label: gathered for the ranking metrics
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # single-label: loss sum, count
    accuracy = {}  # top-1 and top-5 (top-C below 5 classes); torchmetrics sums them over processes
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        if multilabel:
            scores.append(torch.sigmoid(logits))
            targets.append(target.float())
            continue
        c = logits.shape[1]
        accuracy = accuracy or {f"top{k}": MulticlassAccuracy(c, top_k=min(k, c), average="micro",
                                                              validate_args=False).to(device)
                                for k in (1, 5)}
        for metric in accuracy.values():
            metric.update(logits, target)
        totals[0] += torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        totals[1] += target.numel()  # a number added on the device: no tensor built from it
    if multilabel:
        from .multilabel_metrics import multilabel_metrics

        num_classes = getattr(loader, "num_classes", None)
        s = all_gather_cat(torch.cat(scores)) if scores else torch.zeros(0, num_classes or 1)
        t = all_gather_cat(torch.cat(targets)) if targets else torch.zeros_like(s)
        return multilabel_metrics(s.cpu(), t.cpu())
    all_reduce_sum(totals)
    loss, n = totals.tolist()
    top = {name: 100 * metric.compute().item() for name, metric in accuracy.items()}
    return {"loss": loss / max(n, 1), "top1": top.get("top1", 0.0), "top5": top.get("top5", 0.0)}


def evaluate_checkpoint(path, adjust_config=None, device: str = "auto") -> dict:
    """Metrics of a saved model on every eval split of its dataset (or the one `adjust_config`
    sets: a function Config -> Config), as a JSON-ready dict."""
    from ..data import build_data, build_loader
    from .checkpoint import load_model
    from .device import resolve_device

    model, cfg = load_model(path)
    if adjust_config is not None:
        cfg = adjust_config(cfg)
    dev = resolve_device(device)
    bundle = build_data(cfg.data, train=False)
    if bundle.num_classes != model.num_classes:
        from ..errors import UserError

        raise UserError(f"checkpoint {path} predicts {model.num_classes} classes but dataset "
                        f"'{cfg.data.name}' has {bundle.num_classes}")
    model.to(dev)
    metrics = {split: evaluate(model, build_loader(ds, bundle, cfg.data, train=False, seed=cfg.train.seed,
                                                   device=dev), dev, bundle.multilabel)
               for split, ds in bundle.evals.items()}
    return {"checkpoint": str(path), "model": cfg.model.name, "dataset": cfg.data.name,
            "metrics": metrics}

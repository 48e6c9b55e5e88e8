"""Evaluation of a model on every eval split: top-1/top-5 and loss, or the multi-label metrics.

Counts are summed (single-label) or scores gathered (multi-label) across processes, so the numbers
are those of the whole split whatever the world size.
"""
from __future__ import annotations

import torch

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
    # single-label: loss sum, count, top-1 and top-5 hits (top-C below 5 classes), summed over processes.
    # Counted here, not with torchmetrics' MulticlassAccuracy: its top-1 path is a C*C bincount,
    # which waits on the host every batch on CUDA (and is a batch x C*C table in deterministic mode)
    totals = torch.zeros(4, dtype=torch.float64, device=device)
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
        totals[0] += torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        totals[1] += target.numel()  # a number added on the device: no tensor built from it
        totals[2] += logits.argmax(1).eq(target).sum()  # ties: the first class, as torchmetrics
        totals[3] += logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(target[:, None]).any(1).sum()
    if multilabel:
        from .multilabel_metrics import multilabel_metrics

        num_classes = getattr(loader, "num_classes", None)
        s = all_gather_cat(torch.cat(scores)) if scores else torch.zeros(0, num_classes or 1)
        t = all_gather_cat(torch.cat(targets)) if targets else torch.zeros_like(s)
        return multilabel_metrics(s.cpu(), t.cpu())
    all_reduce_sum(totals)
    loss, n, top1, top5 = totals.tolist()
    n = max(n, 1)
    return {"loss": loss / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n}


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

"""`bias_columns`: the few attention-bias scalars `attnzoo compare --analyze` adds to its table."""
from __future__ import annotations

from .bias import DEFAULT_EPS, summarize
from .collect import AnalysisOptions, analyze_split, check_boxes, choose_split, split_scores
from .context import contextual_bias


def bias_columns(model, bundle, split=None, method: str = "gradcam", num_samples: int = 2000,
                 threshold: float = 0.5, eps: float = DEFAULT_EPS, batch_size: int = 256,
                 device="cpu") -> dict:
    """Scalar attention-bias columns of `model` (eval mode) on `bundle` for a comparison table.

    Returns {energy_in_box, pointing, iou, position_bias_rate, range_bias_rate (all at
    `threshold`, over `num_samples` images of `split`, default the first eval split), and, when
    the bundle has `test` and `test_swapped`, swapped_gap (points of top-1 or mAP)}.
    """
    split = choose_split(bundle, split)
    ds = bundle.evals[split]
    check_boxes(bundle.has_boxes, ds, split)
    model.eval()
    options = AnalysisOptions(methods=(method,), num_samples=num_samples, thresholds=(threshold,),
                              eps=eps, batch_size=batch_size, device=device, num_figures=0)
    res = analyze_split(model, ds, bundle, options)
    s = summarize(res.stats[method], res.correct, (threshold,), threshold)["all"]
    t = f"@{float(threshold):g}"
    cols = {"energy_in_box": s["energy_in_box"], "pointing": s["pointing"], "iou": s["iou" + t],
            "position_bias_rate": s["position_bias_rate" + t], "range_bias_rate": s["range_bias_rate" + t]}
    if "test" in bundle.evals and "test_swapped" in bundle.evals:
        splits = split_scores(model, bundle, ("test", "test_swapped"), split, res, num_samples,
                               batch_size, device)
        cols["swapped_gap"] = contextual_bias(splits, bundle.multilabel, num_pairs=0)["swapped_gap"]
    return cols

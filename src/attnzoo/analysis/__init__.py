"""Attention analysis: class activation maps, each family's own attention, attention-bias
statistics against object boxes, contextual bias, and a report per checkpoint.

Entry points: `run_analysis(checkpoint, ...)` (what `attnzoo analyze` calls) and
`bias_columns(model, bundle, ...)` (what `attnzoo compare --analyze` adds to its table).
Definitions of every statistic: docs/analysis.md.
"""
from .bias import CATEGORIES, DEFAULT_EPS, DEFAULT_THRESHOLDS, map_box_stats, summarize
from .boxes import attach_imagenet_boxes, box_masks, dataset_boxes, read_imagenet_loc_csv, resize_crop_boxes
from .cam import CAM_METHODS, compute_cams, eigencam, gradcam, scorecam
from .collect import AnalysisOptions, SplitResult, analyze_split
from .columns import bias_columns
from .context import average_precision, contextual_bias, exclusive_cooccur, mean_ap
from .family import AttentionRecorder, summarize_gates
from .render import render_report
from .report import run_analysis

__all__ = [
    "CAM_METHODS", "CATEGORIES", "DEFAULT_EPS", "DEFAULT_THRESHOLDS", "AnalysisOptions", "AttentionRecorder",
    "SplitResult", "analyze_split", "attach_imagenet_boxes", "average_precision", "bias_columns", "box_masks",
    "compute_cams", "contextual_bias", "dataset_boxes", "eigencam", "exclusive_cooccur", "gradcam",
    "map_box_stats", "mean_ap", "read_imagenet_loc_csv",
    "render_report", "resize_crop_boxes", "run_analysis", "scorecam", "summarize", "summarize_gates",
]

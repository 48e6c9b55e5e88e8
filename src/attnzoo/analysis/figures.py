"""PNG figures of the analysis (matplotlib's Agg canvas; no global pyplot state)."""
from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _hwc(image: torch.Tensor):
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) numpy for imshow."""
    img = image.detach().cpu()
    img = img.float() / 255 if img.dtype == torch.uint8 else img.float().clamp(0, 1)
    return img.permute(1, 2, 0).numpy()


def _draw_boxes(ax, boxes):
    for x0, y0, x1, y1 in (boxes.tolist() if boxes is not None else []):
        # box edges at pixel borders: imshow puts pixel centres at integers
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                               edgecolor="lime", linewidth=1.5))


def cam_grid(images, maps: dict, boxes, titles, path, max_rows: int = 16) -> Path:
    """Rows of samples; columns: the image with its box, then each method's map overlaid.

    images (N, 3, H, W) uint8 (un-normalised), maps {method: (N, H, W) in [0, 1]}, boxes a list
    of (K, 4) tensors, titles one string per row.
    """
    n = min(len(images), max_rows)
    cols = 1 + len(maps)
    fig = Figure(figsize=(1.9 * cols, 1.9 * n + 0.3))
    for i in range(n):
        img = _hwc(images[i])
        for j in range(cols):
            ax = fig.add_subplot(n, cols, i * cols + j + 1)
            ax.imshow(img, interpolation="nearest")
            if j:
                method = list(maps)[j - 1]
                ax.imshow(maps[method][i].cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1,
                          interpolation="bilinear")
                if i == 0:
                    ax.set_title(method, fontsize=8)
            elif i == 0:
                ax.set_title("image + box", fontsize=8)
            _draw_boxes(ax, boxes[i] if boxes is not None else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(titles[i], fontsize=7)
    return _save(fig, path)


def bias_curves(summaries: dict, path) -> Path:
    """Per method: IoU, position-bias and range-bias rate against the threshold, for all,
    correct and wrong predictions."""
    methods = list(summaries)
    fig = Figure(figsize=(11, 3.0 * len(methods) + 0.2))
    keys = (("iou", "IoU(map >= t, box)"), ("position_bias_rate", "position-bias rate"),
            ("range_bias_rate", "range-bias rate"))
    for r, method in enumerate(methods):
        s = summaries[method]
        for c, (key, label) in enumerate(keys):
            ax = fig.add_subplot(len(methods), 3, r * 3 + c + 1)
            for group, style in (("all", "-k"), ("correct", "-g"), ("wrong", "--r")):
                if key in s.get(group, {}):
                    ax.plot(s["thresholds"], s[group][key], style, label=f"{group} (n={s[group]['n']})")
            ax.set_xlabel("threshold t")
            ax.set_ylim(0, 1)
            ax.set_title(f"{method}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def gate_heatmaps(class_means: dict, path, class_names=None) -> Path:
    """One heatmap per stage: mean channel gate per class (rows) and channel (columns)."""
    stages = list(class_means)
    fig = Figure(figsize=(10, 2.2 * len(stages) + 0.3))
    for i, stage in enumerate(stages):
        ax = fig.add_subplot(len(stages), 1, i + 1)
        m = class_means[stage]
        im = ax.imshow(m.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(f"{stage}: mean gate per class and channel", fontsize=9)
        ax.set_xlabel("channel")
        ax.set_ylabel("class")
        if class_names and len(class_names) == m.shape[0] and m.shape[0] <= 20:
            ax.set_yticks(range(m.shape[0]))
            ax.set_yticklabels(class_names, fontsize=6)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save(fig, path)


def pixel_attention(image, items: list, feat_hw, path) -> Path:
    """The image with the query pixel marked, then each layer's attention map at that pixel."""
    cols = 1 + len(items)
    fig = Figure(figsize=(2.2 * cols, 2.4))
    ax = fig.add_subplot(1, cols, 1)
    ax.imshow(_hwc(image), interpolation="nearest")
    ax.set_title("image", fontsize=8)
    ax.axis("off")
    h, w = image.shape[-2:]
    for j, it in enumerate(items, start=2):
        ax = fig.add_subplot(1, cols, j)
        ax.imshow(it["map"].numpy(), cmap="magma", interpolation="nearest")
        if it["kind"] == "global":
            ax.plot([it["pixel"][1]], [it["pixel"][0]], "c+", markersize=10)
        ax.set_title(f"{it['layer']}\n{it['kind']} @ {it['pixel']}", fontsize=7)
        ax.axis("off")
    return _save(fig, path)

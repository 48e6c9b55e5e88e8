"""What a run leaves to read: metrics.jsonl, TensorBoard events, figures/curves.png, and what it
prints: a header (`run_header`), one line per epoch off a terminal (`format_epoch`), a final table.

Only rank 0 writes. metrics.jsonl gets one JSON object per epoch and is cut back to the resumed
epoch on resume, so a resumed run's log reads as if it had never stopped (that a new run never
meets an earlier run's log is the guard of `rundir`). A file-system fault while writing is
one UserError line. An epoch's `lr` is the learning rate of its first step.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import file_errors


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool, resume_epoch: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.run_dir = Path(run_dir)
        self.tb = None
        if not enabled:
            return
        rows = [r for r in read_metrics(self.path) if r["epoch"] <= resume_epoch]
        with file_errors(f"write {self.path}"):
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_epoch + 1)
        except ImportError:  # tensorboard is a dependency; tolerate a broken install
            self.tb = None

    def epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        with file_errors(f"write {self.path}"), self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in flatten(row).items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key.replace(".", "/"), value, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.enabled:
            with file_errors(f"write the figures of {self.run_dir}"):
                plot_curves(read_metrics(self.path), self.run_dir / "figures" / "curves.png")


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            break
    return rows


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def plot_curves(rows: list[dict], path: Path) -> None:
    """Train loss, learning rate and every eval metric against the epoch."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = [flatten(r) for r in rows]
    keys = sorted({k for r in flat for k, v in r.items()
                   if k.startswith("eval.") and isinstance(v, (int, float))})
    panels = [("train loss", ["train_loss"]), ("learning rate", ["lr"])]
    metric_names = sorted({k.split(".")[-1] for k in keys})
    panels += [(m, [k for k in keys if k.endswith("." + m)]) for m in metric_names]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for key in series:
            pts = [(r["epoch"], r[key]) for r in flat if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=key.removeprefix("eval."))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_header(cfg, bundle, model) -> str:
    """What a run is about to train, printed before its first epoch: the run folder, the network
    (with any inserted block) and its pretrained weights, the data and the loss."""
    from ..models.configured import describe_pretrained, model_label
    from .losses import resolve_loss

    params = sum(p.numel() for p in model.parameters())
    kind = "multi-label" if bundle.multilabel else "single-label"
    loss = resolve_loss(cfg.train.loss, bundle.multilabel)
    lines = [f"run      {cfg.run_dir}", f"model    {model_label(cfg.model)}  ({params / 1e6:.3f}M params)"]
    if cfg.model.pretrained:
        lines.append(f"weights  {describe_pretrained(model, cfg.model.pretrained)}")
    lines += [f"data     {cfg.data.name}: {bundle.num_classes} classes, {kind}, {bundle.img_size} px",
              f"loss     {loss}" + (f" (train.loss=auto: {kind} data)" if cfg.train.loss == "auto" else "")]
    return "\n".join(lines)


def format_epoch(row: dict, epochs: int) -> str:
    """One epoch's line off a terminal (a log file, CI), with the results table's names and digits:
    'epoch 2/6  loss 1.8721  lr 0.1  test top1 41.05 top5 88.10  test_swapped top1 30.12 ...'."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}", f"lr {row['lr']:.3g}"]
    for prefix, key in (("", "eval"), ("ema ", "eval_ema")):
        for split, metrics in row.get(key, {}).items():
            values = " ".join(f"{name} {value:.2f}" for name, value in metrics.items()
                              if name != "loss" and isinstance(value, (int, float)))
            parts.append(f"{prefix}{split} {values}")
    return "  ".join(parts)


def format_table(summary: dict) -> str:
    """The final results table printed at the end of `attnzoo train`."""
    model = summary["model"].partition("+")[0] + (f" + {summary['attn']}" if summary.get("attn") else "")
    lines = [f"run      {summary['run_dir']}", f"model    {model}  ({summary['params'] / 1e6:.3f}M params)"]
    header = f"{'split':<16}{'metric':<10}{'final':>10}{'best':>10}"
    lines += ["", header, "-" * len(header)]
    for split, metrics in summary.get("final", {}).items():
        best = summary.get("best", {}).get(split, {})
        for name, value in metrics.items():
            if name == "loss":
                continue
            b = best.get(name)
            lines.append(f"{split:<16}{name:<10}{value:>10.2f}{'' if b is None else f'{b:10.2f}'}")
    best = summary.get("best", {})
    if best.get("source") == "ema":
        lines.append(f"best: epoch {summary.get('best_epoch')}, from the EMA weights (train.ema_decay)")
    lines += ["", f"epochs {summary['epochs_run']}  train {summary['train_img_per_s']:.0f} img/s  "
              f"wall {summary['wall_time_s']:.0f} s"]
    if summary.get("skipped_images"):
        lines.append(f"skipped unreadable images: {summary['skipped_images']}")
    return "\n".join(lines)

"""Which networks `attnzoo export --format onnx` can export: every registered attnzoo network,
built with its defaults (timm's initialisation, BatchNorm statistics of random batches, eval
mode) and exported by the command's own code (`attnzoo.commands.export`: torch's ONNX exporter,
dynamic batch, then onnxruntime against PyTorch on a batch of another size, max |difference| of
the logits at most 1e-4 * max(1, max |logit|) or four times PyTorch's own float32 round-off,
whichever is larger), at its cfg's input size (`--size` caps it: the export's time grows with the
graph, not the pixels, but the check runs the network at that size).
The table gives both numbers: the round-off is float32 vs float64 PyTorch on the same batch.

    PYTHONPATH=src python benchmarks/onnx_export.py [--models 'san*'] [--size 128]

Writes benchmarks/results/onnx_export.{json,md}: per network exported or not, the reason, the
differences and the export time.
"""
import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import attnzoo
from attnzoo.commands.export import ONNX_TOLERANCE, check_onnx, onnx_difference, write_onnx
from attnzoo.errors import UserError


@torch.no_grad()
def calibrate(model, size: tuple, batches: int = 4, batch_size: int = 16) -> None:
    """BatchNorm statistics of random batches, as a trained network has: with a fresh network's
    identity statistics activations grow with depth (ResNet-164's logits reach thousands), and
    float32 round-off grows with them. 64 images, not fewer: SAN's patchwise blocks multiply two
    activations (no softmax), so statistics that miss the next batch's by a little are squared
    block after block; from 16 images at 128 px (a 4x4 last stage), san15_patchwise's eval-mode
    logits reached 2e20 or overflowed, and float32 round-off of 1e16 came with them."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the batches
    model.train()
    for _ in range(batches):
        model(torch.randn(batch_size, *size))
    model.eval()


def export_one(name: str, size_cap: int) -> dict:
    model = attnzoo.create_model(name)
    channels, height, _ = model.pretrained_cfg["input_size"]
    low = model.pretrained_cfg.get("min_input_size") or (channels, 1, 1)
    side = max(min(height, size_cap), low[1])
    if model.pretrained_cfg.get("fixed_input_size"):
        side = height
    calibrate(model, (channels, side, side))
    row = {"model": name, "input_size": [channels, side, side]}
    start = time.perf_counter()
    size = (channels, side, side)
    with tempfile.TemporaryDirectory() as folder:
        try:
            write_onnx(model, name, size, Path(folder) / "model.onnx")
            diff, scale, roundoff = onnx_difference(model, Path(folder) / "model.onnx", size)
            row.update(max_abs_diff=diff, max_abs_logit=scale, relative_diff=diff / max(1.0, scale),
                       float32_roundoff=roundoff)
            check_onnx(name, diff, scale, roundoff)
            row.update(exported=True, reason="")
        except UserError as e:
            row.update(exported=False, reason=str(e))
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="*", help="comma-separated shell patterns over "
                        "attnzoo.list_models(), exported in that order")
    parser.add_argument("--size", type=int, default=128, help="largest input side to export at")
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--resume", action="store_true", help="keep the networks onnx_export.json "
                        "has as exported and try only the others")
    args = parser.parse_args()
    torch.manual_seed(0)
    names = list(dict.fromkeys(n for pattern in args.models.split(",") for n in attnzoo.list_models(pattern)))
    previous = Path(args.out_dir) / "onnx_export.json"
    rows = json.loads(previous.read_text())["rows"] if args.resume and previous.is_file() else []
    rows = [r for r in rows if r["exported"]]  # failures are tried again
    names = [n for n in names if n not in {r["model"] for r in rows}]
    planned = len(rows) + len(names)
    for name in names:
        rows.append(export_one(name, args.size))
        print(json.dumps(rows[-1]), flush=True)
        write(rows, Path(args.out_dir), planned)  # after each network: a long sweep keeps what it did


def write(rows: list, out: Path, planned: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {"torch": torch.__version__, "timm": __import__("timm").__version__,
           "onnx": __import__("onnx").__version__, "onnxscript": __import__("onnxscript").__version__,
           "onnxruntime": __import__("onnxruntime").__version__, "python": platform.python_version()}
    (out / "onnx_export.json").write_text(json.dumps({"tolerance": ONNX_TOLERANCE, "env": env, "rows": rows},
                                                     indent=2) + "\n")
    done = sum(r["exported"] for r in rows)
    lines = [f"# ONNX export of attnzoo's networks ({done} of {len(rows)} export"
             + (f"; {planned - len(rows)} not tried yet" if planned > len(rows) else "") + ")", "",
             "`attnzoo export --format onnx`'s code: onnxruntime vs PyTorch, max |diff| of the logits "
             f"within the larger of {ONNX_TOLERANCE:g} * max(1, max |logit|) (the relative column) and "
             "four times PyTorch's own float32 round-off (float32 vs float64 PyTorch, same batch). "
             "Random weights, BatchNorm statistics of 64 random images; "
             + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
             "",
             "| network | input | exported | max abs diff | max abs logit | relative diff "
             "| float32 round-off | seconds | reason |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| `{r['model']}` | {r['input_size'][1]} px | {'yes' if r['exported'] else 'no'} | "
              + " | ".join(f"{r[k]:.2g}" if k in r else "" for k in
                           ("max_abs_diff", "max_abs_logit", "relative_diff", "float32_roundoff"))
              + f" | {r['seconds']} | {r['reason'].replace('|', '/')} |" for r in rows]
    (out / "onnx_export.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

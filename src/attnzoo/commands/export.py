"""`attnzoo export RUN_OR_CHECKPOINT --format hf|onnx --out DIR`: a trained run in the formats the
ecosystem loads (attnzoo ships no weights, so users publish their own).

- `hf`: timm's Hugging Face layout, written by timm's `save_for_hf`: `config.json` (architecture,
  `model_args`, and the pretrained cfg with the run's input size and normalisation) and
  `model.safetensors`, plus a `README.md` model card (timm's `generate_readme`: recipe, metrics,
  paper, licence). `timm.create_model("local-dir:DIR", pretrained=True)` loads it (after
  `import attnzoo` for attnzoo's networks), and so does `hf-hub:USER/NAME` once the folder is on
  the Hub (timm's `push_to_hf_hub`, or `huggingface-cli upload USER/NAME DIR`).
- `onnx`: `model.onnx` (torch's ONNX exporter, any batch size) and the same model card, written
  only once onnxruntime reproduces PyTorch's logits on a random batch: max |difference| <= the
  larger of 1e-4 * max(1, max |logit|) and four times PyTorch's own float32 round-off (max
  |float32 - float64| of PyTorch's logits), as `check_onnx` says.

DIR is written whole or not at all: the files go to a temporary folder beside it, renamed onto it
at the end; an existing DIR must be empty.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from ..engine.dryrun import DATASET_SHAPES
from ..errors import UserError, check_writable, choices_hint, file_errors, first_sentence

FORMATS = ("hf", "onnx")
ONNX_TOLERANCE = 1e-4  # onnxruntime vs PyTorch, relative to the logits' scale (see check_onnx)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def export(source, fmt: str, out, license: str = "mit") -> str:
    """Export the run folder or checkpoint `source` as `fmt` into the folder `out`; returns a
    one-line report. Every mistake (no such run, bad format, unwritable or non-empty `out`, the
    onnx extra missing, a network the format cannot hold) is a `UserError`."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; {choices_hint(str(fmt), FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ONNX_PACKAGES if not _importable(name)]
        if missing:
            raise UserError(f"--format onnx needs {', '.join(missing)}: pip install \"attnzoo[onnx]\"")
    checkpoint, run_dir = find_checkpoint(source)
    out = Path(out)
    check_writable(out, "--out", folder=True)
    if any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; give a new or empty folder (nothing was written)")

    from ..engine.checkpoint import load_model
    from ..engine.config import config_to_dict

    model, cfg = load_model(checkpoint)
    config = config_to_dict(cfg)
    data = data_config(cfg)
    card = model_card(model, config, data, checkpoint, run_dir, license)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "hf":
            written = save_hf(model, cfg, data, tmp, license)
        else:
            written = save_onnx(model, cfg.model.name, data["input_size"], tmp)
        from timm.models._hub import generate_readme

        with file_errors(f"write the export to {out}"):
            (tmp / "README.md").write_text(generate_readme(card, cfg.model.name))
            mode = out.stat().st_mode & 0o777  # mkdtemp's 0700 and 0600 would keep others out
            for file in tmp.iterdir():
                os.chmod(file, mode & 0o666)
            os.chmod(tmp, mode)
            os.replace(tmp, out)  # onto the empty folder `out`
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = ", ".join([*written, "README.md"])
    how = (f"timm.create_model('local-dir:{out}', pretrained=True) after `import attnzoo`" if fmt == "hf"
           else f"onnxruntime.InferenceSession('{out / 'model.onnx'}')")
    return f"exported {checkpoint} to {out} ({files}); load it with {how}"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def find_checkpoint(source) -> tuple[Path, Path | None]:
    """(checkpoint file, its run folder or None) for a run folder or a checkpoint file; a run
    folder gives its best.safetensors, else its last.pt."""
    path = Path(source)
    if path.is_dir():
        for name in ("best.safetensors", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name, path
        raise UserError(f"{path} holds no checkpoints/best.safetensors or checkpoints/last.pt; give a run "
                        "folder of `attnzoo train` (runs/NAME) or one of its checkpoint files")
    if not path.is_file():
        raise UserError(f"{path} does not exist; give a run folder of `attnzoo train` (runs/NAME) or one "
                        "of its checkpoint files (checkpoints/best.safetensors or last.pt)")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    return path, run_dir if run_dir is not None and (run_dir / "config.yaml").is_file() else None


def data_config(cfg) -> dict:
    """timm's data config of the images the run trained on: input size, mean and std, without
    reading the dataset (the normalisation constants of attnzoo's dataset modules)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    name = cfg.data.name
    if name.startswith("synthetic"):
        from ..data.synthetic import MEAN, STD
    elif name in ("cifar10", "cifar100", "stl10"):
        from ..data.cifar import MEAN, STD
    else:  # image folders, COCO and VOC are normalised with ImageNet's statistics
        MEAN, STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    size = cfg.data.img_size or DATASET_SHAPES.get(name, (None, 224, False))[1]
    return {"input_size": (3, size, size), "mean": tuple(MEAN), "std": tuple(STD)}


def save_hf(model, cfg, data: dict, folder: Path, license: str) -> list[str]:
    """config.json and model.safetensors by timm's `save_for_hf`; returns the file names."""
    from timm.layers import unfreeze_batch_norm_2d
    from timm.models import save_for_hf

    from ..layers.factory import get_block

    if "+" in cfg.model.name or get_block(cfg.model.attn) is not None:
        raise UserError(f"model '{cfg.model.name}' had a block inserted into it after it was built "
                        f"(add_attention), which timm.create_model cannot rebuild from config.json; "
                        "export it with --format onnx, or load the checkpoint with "
                        "attnzoo.engine.checkpoint.load_model")
    if cfg.train.freeze_bn:  # FrozenBatchNorm2d back to BatchNorm2d, the layer the architecture builds
        model = unfreeze_batch_norm_2d(model)
    model_args = {**cfg.model.kwargs, "num_classes": model.num_classes}
    # the weights' cfg: the size and normalisation they were trained with, not the architecture's defaults
    model.pretrained_cfg = {**model.pretrained_cfg, **data, "num_classes": model.num_classes,
                            "license": license}
    if tuple(model.pretrained_cfg.get("input_size", ())) != data["input_size"]:
        model.pretrained_cfg.pop("pool_size", None)
    save_for_hf(model, str(folder), model_args=model_args, safe_serialization=True)
    return ["config.json", "model.safetensors"]


def save_onnx(model, name: str, input_size: tuple, folder: Path) -> list[str]:
    """model.onnx with a dynamic batch dimension, checked against onnxruntime; returns the file name."""
    path = folder / "model.onnx"
    write_onnx(model, name, input_size, path)
    check_onnx(name, *onnx_difference(model, path, input_size))
    return ["model.onnx"]


def write_onnx(model, name: str, input_size: tuple, path: Path) -> None:
    """Export `model` (eval mode) to the ONNX file `path`, with a dynamic batch dimension (SAN's
    operators trace their unfold form while exporting: `attnzoo.ops.resolve_backend`)."""
    example = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    try:
        # no grad: an inference graph (LESA then traces its eval path, which has no autograd Function)
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # and not the progress lines
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                        input_names=["image"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},),
                                        custom_translation_table={torch.ops.prims.prod.default: _prims_prod})
    except Exception as e:  # noqa: BLE001 - the exporter's reason, on one line
        while e.__cause__ is not None:
            e = e.__cause__
        raise UserError(f"model '{name}' cannot be exported to ONNX ({first_sentence(e)}); "
                        "--format hf keeps it for PyTorch and timm") from None
    with file_errors(f"write {path}"):
        program.save(str(path))


def check_batch(input_size: tuple) -> torch.Tensor:
    """The random batch the check runs: 3 images, another batch size than the export's example."""
    return torch.randn(3, *input_size, generator=torch.Generator().manual_seed(1))


def onnx_difference(model, path: Path, input_size: tuple) -> tuple[float, float, float]:
    """On `check_batch`, of the logits: (max |onnxruntime - PyTorch|, max |PyTorch|, PyTorch's own
    float32 round-off max |PyTorch float32 - PyTorch float64|)."""
    import copy

    import numpy as np
    import onnxruntime

    check = check_batch(input_size)
    with torch.no_grad():
        expected = model(check)
        try:
            exact = copy.deepcopy(model).double()(check.double())
            roundoff = float((expected.double() - exact).abs().max())
        except (RuntimeError, TypeError, NotImplementedError):  # no float64 kernel: the relative bound alone
            roundoff = 0.0
    expected = expected.numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": check.numpy()})[0]
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf
    return diff, float(np.abs(expected).max()), roundoff


def check_onnx(name: str, diff: float, scale: float, roundoff: float = 0.0) -> None:
    """Refuse an export whose logits differ from PyTorch's by more than the larger of ONNX_TOLERANCE
    of their scale, 1e-4 * max(1, max |logit|), and four times PyTorch's own float32 round-off (its
    difference from float64 PyTorch; onnxruntime's kernels add their own, of the same order). A deep
    network's round-off outgrows 1e-4 of its logits (random ResNet-164: 6.7e-4, logits 2.2); a wrong
    export differs by the logits' size."""
    if not math.isfinite(scale):
        raise UserError(f"model '{name}': PyTorch's own logits on a random batch are not finite, so there is "
                        "nothing to check onnxruntime against; nothing was written")
    bound = max(ONNX_TOLERANCE * max(1.0, scale), 4 * roundoff)
    if not diff <= bound:
        raise UserError(f"model '{name}': onnxruntime's logits differ from PyTorch's by {diff:.3g}, more "
                        f"than {bound:.3g} (the larger of {ONNX_TOLERANCE:g} * max(1, max|logit|) and four "
                        f"times PyTorch's float32 round-off, {roundoff:.3g}); nothing was written")


def _prims_prod(x, dims, output_dtype=None):
    """`prims.prod` as ONNX's ReduceProd: `torch.cumprod` (LSAS's sub-attention chain) decomposes
    to it, and torch's exporter has no translation of its own."""
    from onnxscript import opset18 as op

    return op.ReduceProd(x, op.Constant(value_ints=list(dims)), keepdims=0)


def model_card(model, config: dict, data: dict, checkpoint: Path, run_dir: Path | None, license: str) -> dict:
    """timm's model card fields: the network, the data it saw, its metrics, paper and licence, and
    the whole recipe (the run's resolved config)."""
    cfg = model.pretrained_cfg
    summary = {}
    if run_dir is not None and (run_dir / "summary.json").is_file():
        with contextlib.suppress(OSError, ValueError):
            summary = json.loads((run_dir / "summary.json").read_text())
    which = "best" if checkpoint.suffix == ".safetensors" else "final"  # best.safetensors: the best epoch
    multilabel = DATASET_SHAPES.get(config["data"]["name"], (None, None, False))[2]
    details = {
        "Model Type": "Image classification" + (" (multi-label)" if multilabel else ""),
        "Architecture": config["model"]["name"],
        "Model args": json.dumps(config["model"]["kwargs"]) if config["model"]["kwargs"] else "defaults",
        "Params (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "Image size": f"{data['input_size'][1]} x {data['input_size'][2]}",
        "Normalisation": f"mean {list(data['mean'])}, std {list(data['std'])}",
        "Dataset": config["data"]["name"],
    }
    metrics = summary.get(which) or {}
    if isinstance(metrics, dict) and metrics:
        details[f"Metrics ({which} epoch)"] = {split: values if isinstance(values, (str, int, float))
                                               else json.dumps(values) for split, values in metrics.items()}
    if config.get("paper"):
        details["Paper's result"] = json.dumps(config["paper"])
    if cfg.get("paper_name"):
        details["Paper"] = cfg["paper_name"]
    if cfg.get("origin_url"):
        details["Official code"] = cfg["origin_url"] + (f" ({cfg['license']})" if cfg.get("license") else "")
    details["Licence"] = f"{license} (these weights; set with `attnzoo export --license`)"
    recipe = yaml.safe_dump(config, sort_keys=False)
    usage = ("```python\nimport attnzoo, timm  # attnzoo registers its networks in timm\n"
             "model = timm.create_model(\"hf-hub:USER/NAME\", pretrained=True)  # or \"local-dir:DIR\"\n"
             "```\n\nTrained by `attnzoo train`; the recipe (the run's resolved config, which "
             "`attnzoo train config.yaml` repeats):\n\n"
             f"```yaml\n{recipe}```\n")
    return {"license": license, "tags": ["image-classification", "timm", "attnzoo"],
            "description": f"`{config['model']['name']}` trained with attnzoo on `{config['data']['name']}`.",
            "details": details, "usage": usage}


def run(args) -> int:
    """`attnzoo export RUN_OR_CHECKPOINT --format hf|onnx --out DIR`: prints what it wrote."""
    print(export(args.source, args.fmt, args.out, license=args.license))
    return 0

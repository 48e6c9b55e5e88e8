"""Check attnzoo's SAN networks against the official implementation on the same random weights.

    python benchmarks/faithfulness_san.py --reference /path/to/SAN [--out benchmarks/results/faithfulness_san.json]
        [--models san10_pairwise,...] [--size 224]

`--reference` is a checkout of hszhao/SAN (not part of attnzoo); its `model/san.py` is imported from
there. The official operators are CuPy CUDA kernels that raise NotImplementedError on the CPU, so
this script (1) installs a stand-in `cupy` module that is never called and (2) replaces the
official `lib.sa.functional.{aggregation, subtraction, subtraction2}` by attnzoo's `reference`
backend (unfold + autograd, itself tested against the kernels' index arithmetic). The network
code around the operators -- module structure, position encoding, unfold/reflection padding of
the patchwise module, softmax, residuals -- is the official one.

Compared, on CPU: parameter counts at 1000 classes; eval-mode logits at `--size` px,
batch 1, after the BatchNorm running statistics are set from one batch (momentum 1) so random
weights give well-scaled activations, with ours running each ops backend ('reference', 'torch');
the train-mode check of `_common.train_check` (batch 2, ours on the torch backend): logits, every
parameter gradient and every BatchNorm running statistic after one forward and the backward of a
random projection, compared through `attnzoo.convert.san`, in float64 where float32 round-off
exceeds the tolerance. The smallest `--size` is 128 (kernel 7 on the last map needs 4x4). And
the FLOPs of the seed's table: the official counter (`util/complexity.py`) on the official SAN
networks and on torchvision's bottleneck ResNet at the ResNet-26/38/50 stage depths, against
attnzoo's `macs_elementwise` (224 px).
Writes one JSON file.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import types
from pathlib import Path

import torch
from _common import train_check

from attnzoo.convert.san import convert
from attnzoo.models import san as ours

MODELS = {"san10_pairwise": (0, 10), "san10_patchwise": (1, 10), "san15_pairwise": (0, 15),
          "san15_patchwise": (1, 15), "san19_pairwise": (0, 19), "san19_patchwise": (1, 19)}


def load_reference(ref: Path):
    if "cupy" not in sys.modules:  # the kernels are never launched: the functional API is replaced below
        cupy = types.ModuleType("cupy")
        cupy.util = types.SimpleNamespace(memoize=lambda **kw: (lambda fn: fn))
        cupy.cuda = types.SimpleNamespace()
        sys.modules["cupy"] = cupy
    sys.path.insert(0, str(ref))
    functional = importlib.import_module("lib.sa.functional")
    from attnzoo import ops

    def agg(input, weight, kernel_size=3, stride=1, padding=0, dilation=1, pad_mode=1):
        return ops.aggregation(input, weight, kernel_size, stride, padding, dilation, pad_mode, backend="reference")

    def sub(input, kernel_size=3, stride=1, padding=0, dilation=1, pad_mode=1):
        return ops.subtraction(input, kernel_size, stride, padding, dilation, pad_mode, backend="reference")

    def sub2(input1, input2, kernel_size=3, stride=1, padding=0, dilation=1, pad_mode=1):
        return ops.subtraction2(input1, input2, kernel_size, stride, padding, dilation, pad_mode,
                                backend="reference")

    functional.aggregation, functional.subtraction, functional.subtraction2 = agg, sub, sub2
    return importlib.import_module("model.san")


def set_backend(model, backend: str):
    for m in model.modules():
        if hasattr(m, "backend") and hasattr(m, "sa_type") and hasattr(m, "conv3"):
            m.backend = backend


def calibrate_bn(model, x):
    """Set every BatchNorm's running statistics to those of batch x (momentum 1)."""
    saved = {}
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            saved[m] = m.momentum
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m, mom in saved.items():
        m.momentum = mom


def compare(name: str, size: int, ref_mod, train_checks: bool) -> dict:
    sa_type, depth = MODELS[name]
    torch.manual_seed(0)
    theirs = ref_mod.san(sa_type, ours.SAN_LAYERS[depth], list(ours.SAN_KERNELS), 1000)
    mine = getattr(ours, name)(backend="reference")
    n_theirs = sum(p.numel() for p in theirs.parameters())
    n_mine = sum(p.numel() for p in mine.parameters())
    x = torch.randn(2, 3, size, size)
    calibrate_bn(theirs, x)
    mine.load_state_dict(convert(theirs.state_dict(), name), strict=True)
    result = {"params_official": n_theirs, "params_attnzoo": n_mine}
    theirs.eval(), mine.eval()
    xe = x[:1]
    with torch.no_grad():
        y_ref = theirs(xe)
        for backend in ("reference", "torch"):
            set_backend(mine, backend)
            t0 = time.time()
            result[f"eval_max_abs_diff_{backend}"] = (mine(xe) - y_ref).abs().max().item()
            result[f"eval_seconds_{backend}"] = round(time.time() - t0, 2)
    result["eval_logit_scale"] = y_ref.abs().max().item()
    if not train_checks:
        return result
    # train mode (batch statistics, batch 2), gradients of every parameter, running statistics;
    # ours on the torch backend (its own backward), the official network on the reference backend
    set_backend(mine, "torch")
    result.update(train_check(theirs, mine, lambda s: convert(s, name), x, seed=1))
    return result


TABLE_GFLOPS = {"san_resnet26": 2.4, "san10_pairwise": 2.2, "san10_patchwise": 1.9, "san_resnet38": 3.2,
                "san15_pairwise": 3.0, "san15_patchwise": 2.6, "san_resnet50": 4.1, "san19_pairwise": 3.8,
                "san19_patchwise": 3.3}  # the README's "Overall result" table


def compare_flops(ref_mod) -> dict:
    """The official counter (`util/complexity.py`) on the official networks (and on torchvision's
    bottleneck ResNet at the baselines' stage depths), against `count_flops(...)['macs_elementwise']`
    of attnzoo's, at 224 px, batch 1, against the table."""
    import io

    import torchvision

    import attnzoo
    from attnzoo.engine.flops import count_flops
    from attnzoo.models.san_resnet import SAN_RESNET_LAYERS

    complexity = importlib.import_module("util.complexity")
    out = {}
    for name, table in TABLE_GFLOPS.items():
        torch.manual_seed(0)
        if name.startswith("san_resnet"):
            layers = SAN_RESNET_LAYERS[int(name.removeprefix("san_resnet"))]
            theirs = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, list(layers))
        else:
            sa_type, depth = MODELS[name]
            theirs = ref_mod.san(sa_type, ours.SAN_LAYERS[depth], list(ours.SAN_KERNELS), 1000)
        with torch.no_grad():
            official, params = complexity.get_model_complexity_info(theirs, (3, 224, 224), as_strings=False,
                                                                    print_per_layer_stat=False, ost=io.StringIO())
        with torch.device("meta"):  # shapes are all the count needs
            mine = attnzoo.create_model(name)
        counted = count_flops(mine, (1, 3, 224, 224))
        out[name] = {"table_gflops": table, "official_counter_gflops": official / 1e9,
                     "attnzoo_macs_elementwise_gflops": counted["macs_elementwise"] / 1e9,
                     "attnzoo_macs_gflops": counted["macs"] / 1e9,
                     "official_params": params, "attnzoo_params": sum(p.numel() for p in mine.parameters()),
                     "rounds_to_table": round(counted["macs_elementwise"] / 1e8) / 10 == table}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="checkout of hszhao/SAN")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/faithfulness_san.json"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train-models", default=",".join(MODELS),
                        help="models that also get the train-mode check")
    args = parser.parse_args(argv)
    if not (args.reference / "model" / "san.py").is_file():
        parser.error(f"--reference {args.reference}: no model/san.py there (a checkout of hszhao/SAN)")
    ref_mod = load_reference(args.reference)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    report = {"reference": str(args.reference), "size": args.size, "dtype": "float32", "device": "cpu",
              "ops_replaced_by": "attnzoo.ops backend 'reference' (official CuPy kernels need CUDA)",
              "models": {}}
    report["flops"] = compare_flops(ref_mod)
    print("flops", json.dumps(report["flops"]), flush=True)
    for name in args.models.split(","):
        report["models"][name] = compare(name, args.size, ref_mod, name in args.train_models.split(","))
        print(name, json.dumps(report["models"][name]), flush=True)
    train = [r for r in report["models"].values() if "train_within_tol" in r]
    report["train_all_within_tol"] = bool(train) and all(r["train_within_tol"] for r in train)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Check attnzoo's LESA networks against the official implementation on the same random weights.

    python benchmarks/faithfulness_lesa.py --reference /path/to/LESA_classification \
        [--pythonpath DIR_WITH_EINOPS] [--out benchmarks/results/faithfulness_lesa.json]

`--reference` is a checkout of Chenglin-Yang/LESA_classification (not part of attnzoo); its
`lib/models` is imported from there. It needs `einops`; `mmcv` is only imported for DCN and is
replaced by a stand-in that refuses to build anything when it is not installed.

Compared, float32 on CPU: parameter counts of both networks at 224 px; eval-mode logits at 224 px,
batch 1 (official weights loaded through `attnzoo.convert.lesa`), also in float64 and as the
float32 error of each against the float64 official result; the train-mode check of
`_common.train_check` (batch 2: logits, every parameter gradient and BatchNorm running statistic
after one step, compared through `attnzoo.convert.lesa`, float64 where float32 round-off exceeds
the tolerance); and single blocks with both position-embedding types
at a small size (eval and train outputs, input gradients). The official random BatchNorm
statistics are first set to the batch statistics of one input (momentum 1), so that eval-mode
activations do not blow up and float32 round-off stays comparable. Writes one JSON file.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
import time
import types
from pathlib import Path

import torch
from _common import train_check

from attnzoo.convert.lesa import convert
from attnzoo.layers.lesa import LESA
from attnzoo.models.lesa import lesa_resnet50, lesa_wrn50


class AttrDict(dict):
    """mmcv.Config-like attribute access for the official config dicts."""

    def __getattr__(self, name):
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return AttrDict(value) if isinstance(value, dict) else value


def load_reference(ref: Path):
    if "mmcv" not in sys.modules:
        try:
            import mmcv.cnn  # noqa: F401
        except ImportError:
            mmcv, cnn = types.ModuleType("mmcv"), types.ModuleType("mmcv.cnn")

            def build_conv_layer(*args, **kwargs):
                raise RuntimeError("mmcv stand-in: DCN is not available")

            cnn.build_conv_layer = build_conv_layer
            mmcv.cnn = cnn
            sys.modules["mmcv"], sys.modules["mmcv.cnn"] = mmcv, cnn
    sys.path.insert(0, str(ref))
    resnet = importlib.import_module("lib.models.resnet")
    lesa_mod = importlib.import_module("lib.models.LESA")
    configs = {}
    for name in ("lesa_resnet", "lesa_wrn"):
        scope: dict = {}
        exec(compile((ref / "config" / f"{name}.py").read_text(), name, "exec"), scope)  # config is a dict literal
        configs[name] = AttrDict(scope["config"])
    return resnet, lesa_mod, configs


def randomize(model: torch.nn.Module, seed: int):
    """Non-trivial BatchNorm statistics and affine parameters, so folding errors show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) * 0.5 + 0.75
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) * 0.5 + 0.75


def calibrate(model: torch.nn.Module, x: torch.Tensor):
    """Running statistics := the batch statistics of `x`, so eval-mode activations stay in range."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m in bns:
        m.momentum = 0.1


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def max_diff(a, b):
    return float((a - b).detach().abs().max())


def compare_network(resnet, cfg, ours_fn, name, with_train):
    torch.manual_seed(0)
    ref = resnet.resnet50(cfg=cfg, num_classes=1000)
    randomize(ref, 1)
    calibrate(ref, torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7)))
    ours = ours_fn()
    ours.load_state_dict(convert(ref.state_dict(), name), strict=True)
    res = {"params_official": n_params(ref), "params_attnzoo": n_params(ours)}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ref.eval(), ours.eval()
    with torch.no_grad():
        t = time.perf_counter()
        y_ref = ref(x)
        res["eval_time_official_s"] = time.perf_counter() - t
        t = time.perf_counter()
        y = ours(x)
        res["eval_time_attnzoo_s"] = time.perf_counter() - t
        res["eval_logits_max_abs_diff"] = max_diff(y, y_ref)
        res["eval_logits_max_abs"] = float(y_ref.abs().max())
        # float32 round-off of each against the float64 official result: the float32 difference
        # above is round-off when ours is as close to the exact result as the official is.
        y64_ref = copy.deepcopy(ref).double()(x.double())
        y64 = copy.deepcopy(ours).double()(x.double())
        res["float64_eval_logits_max_abs_diff"] = max_diff(y64, y64_ref)
        res["float32_error_vs_float64_official"] = max_diff(y_ref.double(), y64_ref)
        res["float32_error_vs_float64_attnzoo"] = max_diff(y.double(), y64_ref)
    if with_train:  # batch 2: logits, every parameter gradient and running statistic after one step
        xb = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
        res.update(train_check(ref, ours, lambda s: convert(s, name), xb, seed=3))
    return res


def compare_block(lesa_mod, pe_type):
    cfg = AttrDict(type="LESA", with_cp_UB_terms_only=False, pe_type=pe_type, groups=4, df_channel_shrink=[2],
                   df_kernel_size=[1, 1], df_group=[1, 1])
    torch.manual_seed(4)
    ref = lesa_mod.LESA(cfg, 32, 32, kernel_size=6, stride=1)
    randomize(ref, 5)
    ours = LESA(32, 32, fmap_size=6, groups=4, pe_type=pe_type)
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("flatten_index")}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 32, 6, 6, generator=torch.Generator().manual_seed(6))
    res = {"params_official": n_params(ref), "params_attnzoo": n_params(ours)}
    ref.eval(), ours.eval()
    with torch.no_grad():
        res["eval_max_abs_diff"] = max_diff(ours(x), ref(x))
    ref.train(), ours.train()
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y = ref(xr), ours(xo)
    res["train_max_abs_diff"] = max_diff(y, y_ref)
    g = torch.randn_like(y)
    y_ref.backward(g)
    y.backward(g)
    res["train_input_grad_max_abs_diff"] = max_diff(xo.grad, xr.grad)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, type=Path, help="checkout of Chenglin-Yang/LESA_classification")
    p.add_argument("--pythonpath", action="append", default=[], help="extra import path (e.g. for einops)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/faithfulness_lesa.json"))
    p.add_argument("--no-train-check", action="store_true", help="skip the batch-2 train-mode comparison")
    args = p.parse_args()
    sys.path[:0] = args.pythonpath
    torch.set_num_threads(max(1, torch.get_num_threads()))
    resnet, lesa_mod, configs = load_reference(args.reference)
    result = {
        "reference": str(args.reference),
        "torch": torch.__version__,
        "blocks": {pe: compare_block(lesa_mod, pe) for pe in ("classification", "detection_qr")},
        "lesa_resnet50": compare_network(resnet, configs["lesa_resnet"], lesa_resnet50, "lesa_resnet50",
                                         not args.no_train_check),
        "lesa_wrn50": compare_network(resnet, configs["lesa_wrn"], lesa_wrn50, "lesa_wrn50",
                                      not args.no_train_check),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

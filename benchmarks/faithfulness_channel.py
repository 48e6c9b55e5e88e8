"""Check attnzoo's channel-attention networks against the official code, on the same weights.

    python benchmarks/faithfulness_channel.py --reference /path/to/LSAS /path/to/Shift_and_Balance_Attention

Each DIR is a checkout of an official repository (not part of attnzoo, never committed):
`Qrange-group/LSAS` (has `cifar/lsas_senet.py` and `imagenet/lsas_senet.py`) and/or
`yuranusduke/Shift_and_Balance_Attention` (has `SBAttention.py` and `utils.py`). For each network
the official model is built, its BatchNorm statistics, affine parameters and LSAS / SB
parameters are randomised, its state dict is mapped onto attnzoo's network with
`attnzoo.convert.lsas` / `attnzoo.convert.sb`, loaded strictly, and both run in eval mode,
float32, on the same random input. Then the train-mode check of `_common.train_check`: one
train-mode forward and the backward of a random projection of the output on both, every
parameter gradient and BatchNorm running statistic compared through the converter's key map
(float64 where float32 round-off exceeds its tolerance). Writes JSON with parameter counts, the
max abs eval difference and the train-mode fields.
"""
import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch
from _common import load_module, randomise, train_check

from attnzoo.convert import lsas as convert_lsas
from attnzoo.convert import sb as convert_sb


def count(model):
    return sum(p.numel() for p in model.parameters())


def compare(theirs, ours, converter, name, x, seed=0):
    randomise(theirs, seed)
    state = converter.convert(theirs.state_dict(), name)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    return {"params_official": count(theirs), "params_attnzoo": count(ours),
            "params_equal": count(theirs) == count(ours), "input": list(x.shape),
            "max_abs_diff": (a - b).abs().max().item(), "max_abs_output": a.abs().max().item(),
            **train_check(theirs, ours, lambda s: converter.convert(s, name), x, seed)}


def lsas_cases(ref: Path):
    """Official LSAS networks (quiet: their constructors print per block)."""
    c_se = load_module(ref / "cifar" / "senet.py", "ref_cifar_senet")
    c_ls = load_module(ref / "cifar" / "lsas_senet.py", "ref_cifar_lsas")
    i_se = load_module(ref / "imagenet" / "senet.py", "ref_imnet_senet")
    i_ls = load_module(ref / "imagenet" / "lsas_senet.py", "ref_imnet_lsas")
    cifar = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    imnet = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    # (our name, our kwargs, official constructor, input)
    yield ("senet164_cifar", {}, lambda: c_se.senet(depth=164, num_classes=10, block_name="bottleneck"), cifar)
    yield ("senet_cifar", {"depth": 47, "num_classes": 100},
           lambda: c_se.senet(depth=47, num_classes=100, block_name="bottleneck"), cifar)
    yield ("lsas_senet164_cifar", {}, lambda: c_ls.lsas_senet(depth=164, num_classes=10,
                                                              block_name="bottleneck", info="normal"), cifar)
    for order in (0, 2, 3, 4, 5):
        yield ("lsas_senet_cifar", {"depth": 29, "num_classes": 100, "order": order},
               lambda o=order: c_ls.lsas_senet(depth=29, num_classes=100, block_name="bottleneck",
                                               info=f"s{o}"), cifar)
    for d in (18, 34, 50, 101, 152):
        yield (f"senet_resnet{d}", {}, lambda d=d: getattr(i_se, f"senet_resnet{d}")(), imnet)
        yield (f"lsas_senet_resnet{d}", {}, lambda d=d: getattr(i_ls, f"lsas_senet_resnet{d}")(), imnet)


def sb_cases(ref: Path):
    sys.path.insert(0, str(ref))
    utils = load_module(ref / "utils.py", "ref_sb_utils")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    yield ("vgg16_cifar", {}, lambda: utils.VGG16(use_sb=False, use_se=False, device="cpu"), x)
    yield ("se_vgg16_cifar", {}, lambda: utils.VGG16(use_sb=False, use_se=True, device="cpu"), x)
    for act in ("tanh", "sigmoid", "relu", "softmax", "linear"):
        yield ("sb_vgg16_cifar", {"activation": act},
               lambda a=act: utils.VGG16(use_sb=True, use_se=False, device="cpu", activation=a), x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", nargs="+", required=True, help="official repository folder(s)")
    ap.add_argument("--out", default="benchmarks/results/faithfulness_channel.json")
    args = ap.parse_args(argv)
    import attnzoo  # noqa: F401  (registers the networks)

    rows = []
    for ref in map(Path, args.reference):
        if (ref / "cifar" / "lsas_senet.py").exists():
            cases, conv, family = lsas_cases(ref), convert_lsas, "lsas"
        elif (ref / "SBAttention.py").exists():
            cases, conv, family = sb_cases(ref), convert_sb, "sb"
        else:
            sys.exit(f"{ref}: neither the LSAS nor the Shift-and-Balance repository")
        for i, (name, kwargs, make_theirs, x) in enumerate(cases):
            torch.manual_seed(i)
            with contextlib.redirect_stdout(io.StringIO()):
                theirs = make_theirs()
            ours = attnzoo.create_model(name, **kwargs)
            t0 = time.time()
            row = {"family": family, "model": name, "kwargs": kwargs,
                   **compare(theirs, ours, conv, name, x, seed=i)}
            row["seconds"] = round(time.time() - t0, 2)
            rows.append(row)
            print(f"{name:24s} {json.dumps(kwargs):36s} params {row['params_attnzoo']:>10,d} "
                  f"(equal: {row['params_equal']})  max|diff| {row['max_abs_diff']:.2e}  train "
                  f"({row['train_dtype']}) within {row['train_tol']:g}: {row['train_within_tol']}", flush=True)
    ok = all(r["params_equal"] and r["max_abs_diff"] < 1e-5 and r["train_within_tol"] for r in rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"all_within_tolerance": ok, "eval_tol": 1e-5, "rows": rows}, indent=1))
    print(f"eval within 1e-5, train mode within tolerance and equal params: {ok}; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

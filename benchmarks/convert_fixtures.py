"""Write the official state-dict layouts that tests/convert/ checks every converter against.

    PYTHONPATH=src python benchmarks/convert_fixtures.py --san /work/ref/san --lsas /work/ref/lsas \
        --sb /work/ref/sb --lesa /work/ref/lesa --ida /work/ref/ida [--pythonpath DIR_WITH_EINOPS]

Each official network is built by the official code (checkouts of hszhao/SAN, Qrange-group/LSAS,
yuranusduke/Shift_and_Balance_Attention, Chenglin-Yang/LESA_classification,
yu-gi-oh-leilei/IDA_2023ICLR; never part of attnzoo), at the smallest size its builder allows,
and its `state_dict()` is written as one JSON file per network into tests/convert/fixtures/:
every key with its shape and dtype (and, for integer tensors of more than one element, the
SHA-256 of their int64 values: LESA's derived `flatten_index`), the repository's commit, the
official constructor call, and the attnzoo network (name and options) with the converter that
maps onto it. No values or weights are stored. Run once per change of the official code.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from _common import load_module

OUT = Path(__file__).resolve().parents[1] / "tests" / "convert" / "fixtures"


def layout(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        entry = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if not value.is_floating_point() and value.numel() > 1:
            entry["int64_sha256"] = hashlib.sha256(value.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()
        out[key] = entry
    return out


def commit(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def write(name: str, repo: Path, repository: str, official: str, model: torch.nn.Module, converter: str,
          attnzoo_model: str, attnzoo_kwargs: dict) -> None:
    doc = {"repository": repository, "commit": commit(repo), "made_by": "benchmarks/convert_fixtures.py",
           "official": official, "converter": converter, "attnzoo_model": attnzoo_model,
           "attnzoo_kwargs": attnzoo_kwargs, "state_dict": layout(model.state_dict())}
    OUT.mkdir(parents=True, exist_ok=True)
    head = json.dumps({k: v for k, v in doc.items() if k != "state_dict"}, indent=1)[:-2]
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in doc["state_dict"].items())
    (OUT / f"{name}.json").write_text(f'{head},\n "state_dict": {{\n{rows}\n }}\n}}\n')  # a tensor a line
    print(f"{name}: {len(doc['state_dict'])} tensors", flush=True)


def _fresh_imports(root: Path) -> None:
    """The official repositories share top-level package names (lib, model, models, utils)."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("lib", "model", "models", "utils"):
            del sys.modules[name]
    sys.path.insert(0, str(root))


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def san(repo: Path) -> None:
    if "cupy" not in sys.modules:  # the CUDA kernels are only compiled when called
        cupy = types.ModuleType("cupy")
        cupy.util = types.SimpleNamespace(memoize=lambda **kw: (lambda fn: fn))
        cupy.cuda = types.SimpleNamespace()
        sys.modules["cupy"] = cupy
    _fresh_imports(repo)
    from model.san import san as build

    layers, kernels = [1, 1, 1, 1, 1], [3, 7, 7, 7, 7]
    for sa_type, kind in ((0, "pairwise"), (1, "patchwise")):
        write(f"san_{kind}", repo, "hszhao/SAN", f"model.san.san(sa_type={sa_type}, layers={layers}, "
              f"kernels={kernels}, num_classes=10)", build(sa_type, layers, kernels, 10), "san-official",
              f"san10_{kind}", {"layers": layers, "kernels": kernels, "num_classes": 10})


def lsas(repo: Path) -> None:
    c_se = load_module(repo / "cifar" / "senet.py", "fixture_cifar_senet")
    c_ls = load_module(repo / "cifar" / "lsas_senet.py", "fixture_cifar_lsas")
    i_se = load_module(repo / "imagenet" / "senet.py", "fixture_imnet_senet")
    i_ls = load_module(repo / "imagenet" / "lsas_senet.py", "fixture_imnet_lsas")
    name = "Qrange-group/LSAS"
    write("lsas_cifar_senet", repo, name, "cifar/senet.py: senet(depth=11, num_classes=10, block_name='bottleneck')",
          quiet(c_se.senet, depth=11, num_classes=10, block_name="bottleneck"), "lsas-official",
          "senet_cifar", {"depth": 11, "num_classes": 10})
    for info, order in (("normal", 1), ("s0", 0), ("s3", 3)):
        write(f"lsas_cifar_lsas_senet_{info}", repo, name,
              f"cifar/lsas_senet.py: lsas_senet(depth=11, num_classes=10, block_name='bottleneck', info='{info}')",
              quiet(c_ls.lsas_senet, depth=11, num_classes=10, block_name="bottleneck", info=info),
              "lsas-official", "lsas_senet_cifar", {"depth": 11, "num_classes": 10, "order": order})
    for depth in (18, 50):
        write(f"lsas_imagenet_senet_resnet{depth}", repo, name, f"imagenet/senet.py: senet_resnet{depth}()",
              quiet(getattr(i_se, f"senet_resnet{depth}")), "lsas-official", f"senet_resnet{depth}", {})
        write(f"lsas_imagenet_lsas_senet_resnet{depth}", repo, name,
              f"imagenet/lsas_senet.py: lsas_senet_resnet{depth}()",
              quiet(getattr(i_ls, f"lsas_senet_resnet{depth}")), "lsas-official", f"lsas_senet_resnet{depth}", {})


def sb(repo: Path) -> None:
    sys.path.insert(0, str(repo))
    utils = load_module(repo / "utils.py", "fixture_sb_utils")
    name = "yuranusduke/Shift_and_Balance_Attention"
    for fixture, kwargs, ours in (("sb_vgg16", dict(use_sb=False, use_se=False), "vgg16_cifar"),
                                  ("sb_se_vgg16", dict(use_sb=False, use_se=True), "se_vgg16_cifar"),
                                  ("sb_sb_vgg16", dict(use_sb=True, use_se=False, activation="tanh"),
                                   "sb_vgg16_cifar")):
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        write(fixture, repo, name, f"utils.py: VGG16({args}, device='cpu')",
              quiet(utils.VGG16, device="cpu", **kwargs), "sb-official", ours,
              {"activation": "tanh"} if ours == "sb_vgg16_cifar" else {})


def lesa(repo: Path) -> None:
    _fresh_imports(repo)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from faithfulness_lesa import load_reference

    resnet, _, configs = load_reference(repo)
    for cfg, ours in (("lesa_resnet", "lesa_resnet50"), ("lesa_wrn", "lesa_wrn50")):
        write(ours, repo, "Chenglin-Yang/LESA_classification",
              f"lib/models/resnet.py: resnet50(cfg=config/{cfg}.py, num_classes=10)",
              quiet(resnet.resnet50, cfg=configs[cfg], num_classes=10), "lesa-official", ours, {"num_classes": 10})


class _StandIn(types.ModuleType):
    """A missing package the official IDA code imports for networks other than the ResNet one:
    every name in it is an empty class, which nothing on the ResNet path uses."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


def ida(repo: Path) -> None:
    _fresh_imports(repo / "all_lib" / "lib_new_attention")
    sys.modules.setdefault("turtle", types.SimpleNamespace(forward=None))  # an unused import there
    stubbed = []
    for _ in range(20):  # the package imports every network it has; stand-ins for what the ResNet path never uses
        try:
            from models.IDAttention import build_ida
            break
        except ModuleNotFoundError as e:
            stubbed.append(e.name)
            sys.modules[e.name] = _StandIn(e.name)
            for name in [n for n in sys.modules if n.split(".")[0] == "models"]:  # half-imported
                del sys.modules[name]
    else:
        raise SystemExit(f"IDA: cannot import models.IDAttention (stand-ins so far: {stubbed})")
    if stubbed:
        print(f"IDA: stand-ins for the unused imports {stubbed}", flush=True)

    for fixture, heavy_head, ours, kwargs in (
            ("ida_resnet18_heavy", True, "ida", {"logit_norm": "last_head", "token_layout": "interleaved"}),
            ("ida_resnet18_light", False, "ida", {"heavy": False}),
            ("ida_resnet18_linear", None, "mlc_baseline", {})):
        args = types.SimpleNamespace(backbone="resnet18", pretrained=False, frozen_backbone=False, num_class=5,
                                     use_intervention=heavy_head is not None, nheads=4,
                                     heavy=bool(heavy_head), keep_input_proj=True)
        model = quiet(build_ida, args)
        write(fixture, repo, "yu-gi-oh-leilei/IDA_2023ICLR",
              f"all_lib/lib_new_attention/models/IDAttention.py: build_ida(backbone='resnet18', pretrained=False, "
              f"num_class=5, use_intervention={args.use_intervention}, nheads=4, heavy={args.heavy})",
              model, "ida-official", ours, {"backbone": "resnet18", "num_classes": 5, **kwargs})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for family in ("san", "lsas", "sb", "lesa", "ida"):
        p.add_argument(f"--{family}", type=Path, help=f"checkout of the official {family.upper()} repository")
    p.add_argument("--pythonpath", action="append", default=[], help="extra import path (einops for LESA)")
    args = p.parse_args()
    sys.path[:0] = args.pythonpath
    torch.manual_seed(0)
    for family, fn in (("ida", ida), ("san", san), ("lsas", lsas), ("sb", sb), ("lesa", lesa)):
        if getattr(args, family):
            fn(getattr(args, family))


if __name__ == "__main__":
    main()

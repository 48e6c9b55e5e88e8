"""Check attnzoo's IDA head, network, loss and mAP against the official code, on the same weights.

    python benchmarks/faithfulness_ida.py --reference /path/to/IDA_2023ICLR [--out FILE.json]

DIR is a checkout of `yu-gi-oh-leilei/IDA_2023ICLR` (not part of attnzoo, never committed); the
files `models/classifier.py`, `models/loss/aslloss.py` and `utils/metric.py` are imported from
`DIR/all_lib/lib_new_attention/` (or from DIR itself). Checks, all float32 on CPU, eval mode:

1. the interventional classifier (heavy and light, 2048 channels, 80 classes, 14x14 features):
   official module with randomised weights -> `attnzoo.convert.ida` -> attnzoo's classifier with
   the official options; max abs difference of the logits (and, for information, the difference
   to the paper variant, which is expected to be large);
2. the whole IDA-R101: torchvision ResNet-101 with FrozenBatchNorm2d (randomised statistics) under
   the official module names (`backbone.0.body.*`, `clf.*`) + the official classifier, converted
   into `ida_resnet101_official`;
3. the asymmetric loss (`AsymmetricLossOptimized`) against `attnzoo.engine.losses.AsymmetricLoss`
   (reduction mean, scale 1000): value and gradient, for the seed's and ASL's default settings;
4. the official `voc_mAP` against `mAP_voc` of `attnzoo.engine.multilabel_metrics`.
Checks 1 and 2 also run the train-mode check of `_common.train_check` (one train-mode forward, the
backward of a random projection, every parameter gradient and running statistic compared through
`attnzoo.convert.ida`; the network with its backbone's BatchNorm frozen, as the seed trains it).
Writes a JSON with every max abs difference (target < 1e-5) and the train-mode fields.
"""
import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torchvision
from _common import load_module, randomise, train_check
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

import attnzoo
from attnzoo.convert import ida as convert_ida
from attnzoo.engine.losses import AsymmetricLoss
from attnzoo.engine.multilabel_metrics import multilabel_metrics
from attnzoo.layers.intervention import InterventionalClassifier
from attnzoo.models import ida as _ida_models  # noqa: F401  (registers the IDA networks)


def load_reference(root: Path, rel: str, name: str):
    lib = root / "all_lib" / "lib_new_attention"
    base = lib if (lib / rel).exists() else root
    path = base / rel
    if not path.exists():
        raise SystemExit(f"--reference {root}: {rel} not found under {base}")
    sys.modules.setdefault("turtle", types.SimpleNamespace(forward=None))  # an unused import there
    return load_module(path, name)


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def head_keys(official: dict) -> dict:
    """The official classifier's keys -> the attnzoo head's, through `attnzoo.convert.ida`."""
    state = convert_ida.convert({f"clf.{k}": v for k, v in official.items()}, "ida")
    return {k.removeprefix("head."): v for k, v in state.items()}


def check_head(ref, heavy: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    theirs = ref.Interventional_Classifier(num_classes=80, feat_dim=2048, num_head=4, beta=0.03125,
                                           heavy=heavy)
    randomise(theirs, seed)
    state = head_keys(theirs.state_dict())
    ours = InterventionalClassifier(2048, 80, num_heads=4, heavy=heavy, logit_norm="last_head",
                                    token_layout="interleaved")
    ours.load_state_dict(state, strict=True)
    paper = InterventionalClassifier(2048, 80, num_heads=4, heavy=heavy)
    paper.load_state_dict(state, strict=True)
    for m in (theirs, ours, paper):
        m.eval()
    x = torch.randn(2, 2048, 14, 14, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y_ref, y_ours, y_paper = theirs(x), ours(x), paper(x)
    return {"max_abs_diff": max_diff(y_ref, y_ours), "logit_scale": y_ref.abs().max().item(),
            "paper_variant_max_abs_diff": max_diff(y_ref, y_paper),
            **train_check(theirs, ours, head_keys, x, seed)}


class OfficialLayout(nn.Module):
    """torchvision ResNet-101 body (FrozenBatchNorm2d) + the official classifier, with the module
    names of the official `IDA` network (backbone.0.body.*, clf.*); forward = clf(layer4 map)."""

    def __init__(self, clf: nn.Module):
        super().__init__()
        resnet = torchvision.models.resnet101(weights=None, norm_layer=FrozenBatchNorm2d)
        self.backbone = nn.Sequential(nn.Module())
        self.backbone[0].body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.clf = clf

    def forward(self, x):
        return self.clf(self.backbone[0].body(x)["0"])


def check_network(ref, seed: int, size: int) -> dict:
    torch.manual_seed(seed)
    theirs = OfficialLayout(ref.Interventional_Classifier(num_classes=80, feat_dim=2048, num_head=4,
                                                          beta=0.03125, heavy=True))
    randomise(theirs, seed)
    ours = attnzoo.create_model("ida_resnet101_official", num_classes=80)
    ours.load_state_dict(convert_ida.convert(theirs.state_dict(), "ida_resnet101_official"), strict=True)
    theirs.eval()
    ours.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y_ref, y_ours = theirs(x), ours(x)
        feats_ref, feats_ours = theirs.backbone[0].body(x)["0"], ours.forward_features(x)
    # train mode as the seed trains (and `train.freeze_bn`): FrozenBatchNorm2d backbone, so there
    # are no running statistics to update; every gradient is compared
    def to_ours(official: dict) -> dict:  # the counters the converter adds belong to BatchNorm2d only
        converted = convert_ida.convert(official, "ida_resnet101_official")
        return {k: v for k, v in converted.items() if not k.endswith("num_batches_tracked")}

    return {"max_abs_diff": max_diff(y_ref, y_ours), "logit_scale": y_ref.abs().max().item(),
            "feature_max_abs_diff": max_diff(feats_ref, feats_ours), "feature_scale": feats_ref.abs().max().item(),
            "input": [2, 3, size, size], "params": sum(p.numel() for p in ours.parameters()),
            **train_check(theirs, freeze_batch_norm_2d(ours), to_ours, x, seed)}


def check_loss(ref, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    settings = {"seed_command": dict(gamma_pos=0, gamma_neg=0, clip=0.0, eps=1e-5, dtgfl=True),
                "asl_default": dict(gamma_pos=1, gamma_neg=4, clip=0.05, eps=1e-5, dtgfl=False),
                "asl_no_focal_grad": dict(gamma_pos=1, gamma_neg=4, clip=0.05, eps=1e-5, dtgfl=True)}
    for name, s in settings.items():
        logits = torch.randn(8, 80, generator=g) * 3
        targets = (torch.rand(8, 80, generator=g) < 0.1).float()
        theirs = ref.AsymmetricLossOptimized(gamma_neg=s["gamma_neg"], gamma_pos=s["gamma_pos"],
                                             clip=s["clip"], eps=s["eps"],
                                             disable_torch_grad_focal_loss=s["dtgfl"])
        ours = AsymmetricLoss(gamma_pos=s["gamma_pos"], gamma_neg=s["gamma_neg"], clip=s["clip"],
                              eps=s["eps"], disable_torch_grad_focal_loss=s["dtgfl"],
                              reduction="mean", scale=1000)
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        la, lb = theirs(a, targets), ours(b, targets)
        la.backward()
        lb.backward()
        out[name] = {"loss": la.item(), "loss_abs_diff": abs(la.item() - lb.item()),
                     "grad_max_abs_diff": max_diff(a.grad, b.grad)}
    return out


def check_map(ref, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(300, 20, generator=g)
    targets = (torch.rand(300, 20, generator=g) < 0.2 + 0.5 * scores).float()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "saved.txt"
        np.savetxt(path, torch.cat([scores, targets], 1).numpy())
        theirs = ref.voc_mAP([str(path)], 20)
    ours = multilabel_metrics(scores, targets)
    return {"official_voc_mAP": float(theirs), "mAP_voc": ours["mAP_voc"], "mAP_torchmetrics": ours["mAP"],
            "abs_diff": abs(float(theirs) - ours["mAP_voc"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, type=Path, help="checkout of IDA_2023ICLR")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/faithfulness_ida.json"))
    parser.add_argument("--size", type=int, default=224, help="input size of the network check")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    clf = load_reference(args.reference, "models/classifier.py", "ida_reference_classifier")
    asl = load_reference(args.reference, "models/loss/aslloss.py", "ida_reference_aslloss")
    metric = load_reference(args.reference, "utils/metric.py", "ida_reference_metric")
    t0 = time.time()
    result = {
        "reference": "yu-gi-oh-leilei/IDA_2023ICLR (all_lib/lib_new_attention)",
        "torch": torch.__version__,
        "head_heavy": check_head(clf, True, args.seed),
        "head_light": check_head(clf, False, args.seed + 10),
        "ida_resnet101_official": check_network(clf, args.seed + 20, args.size),
        "asl_loss": check_loss(asl, args.seed + 30),
        "voc_mAP": check_map(metric, args.seed + 40),
    }
    result["seconds"] = round(time.time() - t0, 1)
    worst = max(result["head_heavy"]["max_abs_diff"], result["head_light"]["max_abs_diff"],
                result["ida_resnet101_official"]["max_abs_diff"],
                *(v["loss_abs_diff"] for v in result["asl_loss"].values()),
                *(v["grad_max_abs_diff"] for v in result["asl_loss"].values()),
                result["voc_mAP"]["abs_diff"])
    result["worst_max_abs_diff"] = worst
    result["pass_1e-5"] = worst < 1e-5
    result["train_all_within_tol"] = all(result[k]["train_within_tol"]
                                         for k in ("head_heavy", "head_light", "ida_resnet101_official"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Official LSAS checkpoints (`Qrange-group/LSAS`, `--from lsas-official`) -> attnzoo key names.

Covers the seed's four families: CIFAR `senet` / `lsas_senet` (-> `senet*_cifar`,
`lsas_senet*_cifar`) and ImageNet `senet_resnet*` / `lsas_senet_resnet*`. The trunk keys (conv1,
bn1, layerS.B.conv/bn/downsample, fc) are the same in both; only the attention moves:

    CIFAR   layerS.B.fc1 / fc2               -> layerS.B.attn.fc1 / fc2        (SE)
            layerS.B.fc1 / fc2 (+ w, b, ...)  -> layerS.B.attn.base.fc1 / fc2   (LSAS-SE, and every
                                                 block of an `lsas_*` model: order 0 has no w, b)
    ImageNet layerS.B.se.fc.0 / se.fc.2      -> layerS.B.attn[.base].fc1 / fc2
    LSAS     w, w2..wk and b, b2..bk, each (1, C, 1, 1) -> attn.sub_w, attn.sub_b of shape (k, C)

The sub-attention parameters are the one place where tensors change shape: attnzoo keeps the k
per-channel vectors of a block as rows of one (k, C) parameter (values unchanged, in chain order).
Keys that match none of these rules are passed through unchanged, so strict loading reports them.
"""
import re

import torch

from ..errors import UserError

_SUB = re.compile(r"^(?P<block>layer\d+\.\d+)\.(?:se\.)?(?P<kind>[wb])(?P<idx>\d?)$")
_CIFAR_FC = re.compile(r"^(?P<block>layer\d+\.\d+)\.(?P<fc>fc[12])\.(?P<p>weight|bias)$")
_IMNET_FC = re.compile(r"^(?P<block>layer\d+\.\d+)\.se\.fc\.(?P<i>[02])\.(?P<p>weight|bias)$")


def convert(state_dict: dict, model_name: str) -> dict:
    """Rename an official LSAS state dict (already without `module.`) to the attnzoo model's keys."""
    # blocks with sub-attention: their SE lives under attn.base
    subs: dict = {}
    for key, value in state_dict.items():
        m = _SUB.match(key)
        if m:
            idx = int(m["idx"] or 1)
            subs.setdefault(m["block"], {}).setdefault(m["kind"], {})[idx] = value
    lsas_blocks = set(subs)

    out = {}
    for key, value in state_dict.items():
        if _SUB.match(key):
            continue
        m = _CIFAR_FC.match(key) or _IMNET_FC.match(key)
        if m:
            fc = m.groupdict().get("fc") or ("fc1" if m["i"] == "0" else "fc2")
            lsas = m["block"] in lsas_blocks or model_name.startswith("lsas_")
            inner = "attn.base" if lsas else "attn"
            key = f"{m['block']}.{inner}.{fc}.{m['p']}"
        out[key] = value

    for block, kinds in subs.items():
        for kind, name in (("w", "sub_w"), ("b", "sub_b")):
            got = kinds.get(kind, {})
            order = sorted(got)
            if order != list(range(1, len(order) + 1)):
                raise UserError(f"LSAS checkpoint: block {block} has sub-attention {kind} of orders "
                                f"{order}; expected a chain 1..k")
            out[f"{block}.attn.{name}"] = torch.stack([got[i].reshape(-1) for i in order])
    return out

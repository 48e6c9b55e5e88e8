"""`attnzoo convert --from lesa-official`: released LESA_classification checkpoints -> attnzoo.

The official checkpoints (``{'net': state_dict, ...}`` saved through DataParallel) already use our
parameter names (`attnzoo.models.lesa` keeps them). The only difference is the derived
``<block>.conv2.flatten_index`` buffer of every classification-PE LESA block: the (HW*HW,) index of
relative offsets, which attnzoo rebuilds for the size the network is built for. It is checked
against the index a 1-D relative layout implies (so a corrupt or foreign file is refused rather
than silently accepted) and then dropped; every other tensor is passed on unchanged.
"""
from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..layers.lesa import relative_index

MODELS = ("lesa_resnet50", "lesa_wrn50")


def convert(state_dict: dict, model_name: str) -> dict:
    """Official LESA state dict -> attnzoo state dict for `model_name` (tensors unchanged)."""
    if model_name not in MODELS:
        raise UserError(f"lesa-official checkpoints convert into {', '.join(MODELS)}, not '{model_name}'")
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".flatten_index"):
            n = value.numel()
            L = math.isqrt(n)
            if value.dim() != 1 or L * L != n or not torch.equal(value.long(), relative_index(L).flatten()):
                raise UserError(f"{key}: not the relative-offset index of an official LESA block "
                                f"(shape {tuple(value.shape)})")
            continue  # derived buffer, rebuilt by attnzoo
        out[key] = value
    return out

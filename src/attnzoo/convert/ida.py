"""Official IDA checkpoints (`yu-gi-oh-leilei/IDA_2023ICLR`, `IDA` of `models/IDAttention.py`) ->
attnzoo `ida_*` / `mlc_baseline` state dicts.

Renaming (after the shared machinery has unwrapped `state_dict` and stripped `module.`):

| official                                        | attnzoo                           |
|-------------------------------------------------|-----------------------------------|
| backbone.0.body.<name>                          | backbone.<name>                   |
| clf.head.<h>.weight (C, d, 1, 1), h = 0..H-1    | head.weight (H, C, d), stacked    |
| clf.att_layers.layers.<l>.att.{q,k,v}_proj.*    | head.layers.<l>.{q,k,v}.*         |
| clf.att_layers.layers.<l>.att.out_proj.*        | head.layers.<l>.proj.*            |
| clf.att_layers.layers.<l>.linear{1,2}.*         | head.layers.<l>.fc{1,2}.*         |
| clf.att_layers.layers.<l>.norm{1,2}.*           | head.layers.<l>.norm{1,2}.*       |
| clf.out_proj.*                                  | head.out_proj.*                   |
| clf.{weight,bias} (the linear baseline)         | head.{weight,bias}                |

The per-head 1x1 convolutions are stacked into one tensor (values unchanged) because attnzoo
computes all heads in one batched operation. The official backbone uses FrozenBatchNorm2d, which
has no `num_batches_tracked`; a zero counter is added for every BatchNorm so the state loads
strictly. Keys that match no rule are passed through unchanged, so the strict load names them.

For outputs identical to the official code, convert into `ida_resnet101_official` (or any `ida`
model built with logit_norm="last_head", token_layout="interleaved"); converting into the paper
variant `ida_resnet101` keeps the weights but not the official outputs.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserError

_LAYER_RENAMES = {"att.q_proj": "q", "att.k_proj": "k", "att.v_proj": "v", "att.out_proj": "proj",
                  "linear1": "fc1", "linear2": "fc2", "norm1": "norm1", "norm2": "norm2"}
_LAYER_RE = re.compile(r"^clf\.att_layers\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_HEAD_RE = re.compile(r"^clf\.head\.(\d+)\.weight$")


def _stack_heads(heads: dict) -> torch.Tensor:
    idx = sorted(heads)
    if idx != list(range(len(idx))):
        raise UserError(f"IDA checkpoint: classifier heads {idx} are not numbered 0..{len(idx) - 1}")
    weights = [heads[i] for i in idx]
    shapes = {tuple(w.shape) for w in weights}
    if len(shapes) != 1 or len(weights[0].shape) not in (2, 4):
        raise UserError(f"IDA checkpoint: classifier heads have unexpected shapes {sorted(shapes)}")
    return torch.stack([w.reshape(w.shape[0], w.shape[1]) for w in weights])  # (H, C, d)


def convert(state_dict: dict, model_name: str) -> dict:
    """Rename an official IDA state dict to attnzoo's keys (see the module docstring)."""
    out, heads = {}, {}
    for key, value in state_dict.items():
        if key.startswith("backbone.0.body."):
            out["backbone." + key[len("backbone.0.body."):]] = value
            continue
        m = _HEAD_RE.match(key)
        if m:
            heads[int(m.group(1))] = value
            continue
        m = _LAYER_RE.match(key)
        if m and m.group(2) in _LAYER_RENAMES:
            out[f"head.layers.{m.group(1)}.{_LAYER_RENAMES[m.group(2)]}.{m.group(3)}"] = value
            continue
        if key.startswith("clf.out_proj."):
            out["head.out_proj." + key[len("clf.out_proj."):]] = value
            continue
        if key in ("clf.weight", "clf.bias"):  # the linear baseline (use_intervention=False)
            out["head." + key[len("clf."):]] = value
            continue
        out[key] = value  # unknown: kept, so the strict load reports it
    if heads:
        out["head.weight"] = _stack_heads(heads)
    for key in list(out):
        if key.startswith("backbone.") and key.endswith(".running_var"):
            counter = key[: -len("running_var")] + "num_batches_tracked"
            out.setdefault(counter, torch.zeros((), dtype=torch.long))
    return out

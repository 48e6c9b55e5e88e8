"""Attention building blocks, one file per family; `create_block(name, channels)` builds any
block by name (`block_names()` lists them) and `get_attn(name, **kwargs)` gives the
`channels -> block` callable that timm's `attn_layer=` and attnzoo's networks take.

Every block maps (N, C, H, W) -> (N, C, H, W) unless its docstring says otherwise
(InterventionalClassifier maps a feature map to class logits).

Every block traces with torch.fx through timm's leaf registration (timm's and torchvision's
feature extractors): custom operators and data-dependent checks are registered with
`timm.layers.register_notrace_function`. Every block compiles with `torch.jit.script` except those
in `NOT_SCRIPTABLE`; SAN's operators stay Python calls there (see `attnzoo.ops`).
"""
from .factory import block_names, create_block, get_attn, get_block
from .intervention import InterventionalClassifier
from .lesa import LESA
from .lsas import LSAS
from .san import SAM, SANBottleneck
from .se import SE
from .shift_balance import BNSqueezeExcite, ShiftBalance

# The blocks torch.jit.script cannot compile. LESA hands its BatchNorm modules to
# `attnzoo.ops.lesa_attention`, whose lean path is custom autograd Functions, and checkpoints
# activations: TorchScript supports none of these.
NOT_SCRIPTABLE = (LESA,)

__all__ = ["NOT_SCRIPTABLE", "block_names", "create_block", "get_attn", "get_block", "SE", "LSAS", "ShiftBalance",
           "BNSqueezeExcite", "LESA", "SAM", "SANBottleneck", "InterventionalClassifier"]

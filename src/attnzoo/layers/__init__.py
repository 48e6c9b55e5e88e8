"""Attention building blocks, one file per family; `create_block(name, channels)` builds any
block by name (`block_names()` lists them) and `get_attn(name, **kwargs)` gives the
`channels -> block` callable that timm's `attn_layer=` and attnzoo's networks take.

Every block maps (N, C, H, W) -> (N, C, H, W) unless its docstring says otherwise
(InterventionalClassifier maps a feature map to class logits).
"""
from .factory import block_names, create_block, get_attn, get_block
from .intervention import InterventionalClassifier
from .lesa import LESA
from .lsas import LSAS
from .san import SAM, SANBottleneck
from .se import SE
from .shift_balance import BNSqueezeExcite, ShiftBalance

__all__ = ["block_names", "create_block", "get_attn", "get_block", "SE", "LSAS", "ShiftBalance",
           "BNSqueezeExcite", "LESA", "SAM", "SANBottleneck", "InterventionalClassifier"]

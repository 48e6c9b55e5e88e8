"""Attention building blocks, one file per family; `create_block(name, channels)` builds any."""
from .factory import block_names, create_block, get_block

__all__ = ["block_names", "create_block", "get_block"]

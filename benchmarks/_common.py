"""Helpers shared by the benchmark scripts. Run them from the repository root with attnzoo
importable (`PYTHONPATH=src python benchmarks/x.py ...` or an installed package)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

# Learned gates and scales of the official LSAS and SB code (w, b, w2 ... b5, lambd): drawn
# around their working range so the attention is far from its identity initialisation
_GATE_LEAVES = {"w", "b", "w2", "b2", "w3", "b3", "w4", "b4", "w5", "b5", "lambd"}


def load_module(path: Path, name: str):
    """Import one file of an official checkout (not an installed package) as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int) -> None:
    """Random non-trivial values for every floating parameter and buffer (BatchNorm statistics
    included), so that a faithfulness comparison exercises every weight in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        leaf = name.rsplit(".", 1)[-1]
        if not t.is_floating_point():
            continue
        if leaf in _GATE_LEAVES:
            t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (0.5 if leaf[0] in "wl" else 0))
        elif leaf == "running_var":
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif leaf in ("running_mean", "bias"):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        elif t.ndim == 1 and re.search(r"(bn3|downsample\.1)\.weight$", name):
            # small last scale of every residual branch, as in trained ResNets: keeps deep features
            # O(1) instead of growing with depth (float32 round-off would be amplified)
            t.copy_(torch.rand(t.shape, generator=g) * 0.2 + 0.05)
        elif t.ndim <= 1:  # norm weights and other scales
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)

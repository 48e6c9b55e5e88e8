"""Counting a network's multiply-adds at the real input size, custom operators included.

`count_flops` runs one forward pass under `torch.utils.flop_counter.FlopCounterMode` and reports
three numbers:

- ``flops``: what FlopCounterMode counts (2 per multiply-add of every convolution, matmul,
  attention kernel, ...);
- ``macs``: multiply-adds = flops / 2, the unit the seeds' "FLOPs" columns use (ResNet-50 at
  224 px: 4.1G). Tables in attnzoo print MACs. Element-wise work (BatchNorm, activations,
  pooling, softmax, bias additions, residual sums) is not in it.
- ``macs_elementwise``: the count of the SAN seed's own counter (`util/complexity.py` of
  hszhao/SAN, a 2019 copy of sovrasov/flops-counter.pytorch), which is what its table's "Flops"
  column reports: ``macs`` plus, per forward call of a module of exactly these types,
  the bias of a convolution (1 per output element), ReLU/PReLU/ELU/LeakyReLU/ReLU6 (1 per output
  element), max/average/adaptive pooling (1 per *input* element), BatchNorm (2 per input element
  when affine, else 1) and Upsample (1 per output element). SAN's subtraction (1 per output
  element) and aggregation (k*k per output element) are in ``macs`` already, counted the same
  way. Not counted by either: softmax, residual additions, Linear biases, normalisations of
  other types (LayerNorm, FrozenBatchNorm2d) and functional calls (`F.relu`). For the networks
  of the SAN table this is the difference between ``macs`` and the table: SAN10 pairwise 2.05G
  -> 2.16G (table 2.2G), the ResNet-26 baseline 2.34G -> 2.37G (table 2.4G).

Custom operators (attnzoo.ops: SAN aggregation and subtraction) are counted through the FLOP
formulas `attnzoo.ops` registers with `torch.utils.flop_counter.register_flop_formula`. An
operator outside the ``aten``/``prims`` namespaces that runs without a formula is listed in
``uncounted_ops`` of the result, so a missing count is visible instead of silently zero.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from .. import ops  # noqa: F401  (registers the FLOP formulas of the custom operators)
from ..errors import UserError

_BUILTIN_NAMESPACES = ("aten", "prims", "prim", "profiler", "debugprims")


def _packet(op):
    """The OpOverloadPacket of an op or overload (the registry may be keyed by either)."""
    return getattr(op, "overloadpacket", op)


class _UncountedOps(TorchDispatchMode):
    """Records the non-aten operators that ran without a FLOP formula."""

    def __init__(self):
        super().__init__()
        self.known = {_packet(k) for k in flop_registry}
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        namespace = getattr(func, "namespace", "aten")
        if namespace not in _BUILTIN_NAMESPACES and _packet(func) not in self.known:
            self.seen.add(str(_packet(func)))
        return func(*args, **(kwargs or {}))


# What SAN's counter adds to the multiply-adds, by exact module type (the counter matches
# `type(module)`, so subclasses such as timm's BatchNormAct2d are not counted, as there).
def _bias(m, inputs, out):
    return out.numel() if m.bias is not None else 0


def _out(m, inputs, out):
    return out.numel()


def _in(m, inputs, out):
    return inputs[0].numel()


def _bn(m, inputs, out):
    return inputs[0].numel() * (2 if m.affine else 1)


_ELEMENTWISE = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _bias),
    **dict.fromkeys((nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.Upsample), _out),
    **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                     nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                     nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _in),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _bn),
}


def _count_elementwise(model: nn.Module) -> tuple[list, list]:
    """Forward hooks adding SAN's element-wise counts into total[0]; returns (total, handles)."""
    total = [0]

    def add(m, inputs, out):
        total[0] += _ELEMENTWISE[type(m)](m, inputs, out)

    handles = [m.register_forward_hook(add) for m in model.modules() if type(m) in _ELEMENTWISE]
    return total, handles


def _module_key(root: nn.Module, name: str) -> str:
    """The key FlopCounterMode uses for a submodule: root class name, then the dotted path."""
    return f"{type(root).__name__}.{name}" if name else type(root).__name__


def count_flops(model: nn.Module, input_size=(1, 3, 224, 224), per_module: list[str] | None = None,
                device=None) -> dict:
    """FLOPs and MACs of one forward pass of `model` on a random input of `input_size`.

    Args:
        model: any module taking one (N, C, H, W) tensor; it is put in eval mode for the count
            and its train/eval state restored afterwards.
        input_size: the full input shape (batch first); counts scale with the batch.
        per_module: dotted submodule names (as in `named_modules`) to report separately.
        device: where the input is made; default the device of the model's first parameter.

    Returns:
        dict(flops=int, macs=int, macs_elementwise=int (SAN's counter, see the module docstring),
        per_module={name: macs}, uncounted_ops=[op names]).
    """
    if len(input_size) != 4 or any(int(s) < 1 for s in input_size):
        raise UserError(f"input_size {tuple(input_size)}: expected (N, C, H, W) with positive sizes")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(*input_size, device=device)
    was_training = model.training
    model.eval()
    uncounted = _UncountedOps()
    counter = FlopCounterMode(display=False)
    elementwise, handles = _count_elementwise(model)
    try:
        with torch.no_grad(), counter, uncounted:
            model(x)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{type(model).__name__} does not run on input {tuple(input_size)}: "
                        f"{first}") from None
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    flops = int(counter.get_total_flops())
    counts = counter.get_flop_counts()
    modules = {}
    for name in per_module or []:
        modules[name] = int(sum(counts.get(_module_key(model, name), {}).values())) // 2
    return {"flops": flops, "macs": flops // 2, "macs_elementwise": flops // 2 + elementwise[0],
            "per_module": modules,
            "uncounted_ops": sorted(uncounted.seen)}


def human(n: float, unit: str = "") -> str:
    """12_345_678 -> '12.35M' (K, M, G, T)."""
    n = float(n)
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if n == int(n) else f"{n:.2f}{unit}"

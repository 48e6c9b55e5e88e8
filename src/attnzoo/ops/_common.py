"""Argument checking shared by every backend of the SAN operators, and the dtype helpers of all
attnzoo operators (`no_autocast`, `acc_dtype`).

Shapes (as in the official CUDA kernels of hszhao/SAN, `lib/sa/functions/`):

* aggregation: x (N, C, H, W), weight (N, Cw, kh*kw, Ho*Wo) with C % Cw == 0
  -> (N, C, Ho, Wo); channel c is weighted by weight channel c % Cw.
* subtraction2: x1, x2 (N, C, H, W) -> (N, C, kh*kw, Ho*Wo);
  out[n, c, i*kw + j, l] = x1[n, c, centre(l)] - x2_padded[n, c, neighbour(l, i, j)].
* subtraction: subtraction2(x, x).

Ho = (H + 2*ph - (dh*(kh-1) + 1)) // sh + 1 (same for W). The centre of output position (ho, wo)
is x1[ho*sh + (kh-1)//2*dh - ph, wo*sw + (kw-1)//2*dw - pw]; it must lie inside x1 (it does for the
"same" padding p = (d*(k-1)+1)//2 with odd k that SAN uses). Reflection padding mirrors once about
the border without repeating it (torch.nn.ReflectionPad2d), so it needs p < H and p < W.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..errors import UserError, choices_hint

PAD_MODES = ("zero", "reflect")


def no_autocast(t: torch.Tensor):
    """Autocast off on t's device: the operators choose their dtypes themselves (CPU autocast would
    turn reflection padding into float32, CUDA autocast sums into float32)."""
    if t.device.type == "meta":  # no autocast there (timm's meta-device model tests)
        return contextlib.nullcontext()
    return torch.autocast(t.device.type, enabled=False)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for bf16/fp16 (and float32), float64 for float64: the dtype sums accumulate in."""
    return torch.promote_types(dtype, torch.float32)


def _pair(value, name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else value
    try:
        a, b = values
    except (TypeError, ValueError):
        raise UserError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b)):
        raise UserError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (a, b)


def pad_mode_name(pad_mode) -> str:
    """'zero' or 'reflect'; also accepts the official integers 0 (zero) and 1 (reflect)."""
    if pad_mode in (0, 1) and not isinstance(pad_mode, str):
        return PAD_MODES[int(pad_mode)]
    if pad_mode not in PAD_MODES:
        raise UserError(f"unknown pad_mode {pad_mode!r}; {choices_hint(str(pad_mode), PAD_MODES)} "
                        "(or the official 0 = zero, 1 = reflect)")
    return pad_mode


@dataclass(frozen=True)
class Geometry:
    """Everything a backend needs besides the tensors."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    reflect: bool
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def centre(self) -> tuple[int, int]:
        """Offset of the centre tap in unpadded input coordinates (0 for SAN's padding)."""
        return tuple((k - 1) // 2 * d - p for k, d, p in zip(self.kernel, self.dilation, self.padding, strict=True))

    def as_lists(self):
        return list(self.kernel), list(self.stride), list(self.padding), list(self.dilation)


def geometry(op: str, x: torch.Tensor, kernel_size, stride, padding, dilation, pad_mode,
             check_centre: bool = False) -> Geometry:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserError(f"{op}: input must be a 4-D tensor (N, C, H, W), got {shape}")
    k, s = _pair(kernel_size, f"{op}: kernel_size"), _pair(stride, f"{op}: stride")
    p, d = _pair(padding, f"{op}: padding"), _pair(dilation, f"{op}: dilation")
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise UserError(f"{op}: kernel_size, stride and dilation must be >= 1 and padding >= 0, "
                        f"got kernel_size={k}, stride={s}, padding={p}, dilation={d}")
    reflect = pad_mode_name(pad_mode) == "reflect"
    H, W = x.shape[-2:]
    if reflect and (p[0] >= H or p[1] >= W):
        raise UserError(f"{op}: reflection padding {p} needs padding < input size (H, W)=({H}, {W}); "
                        "use a larger input or pad_mode='zero'")
    out = tuple((n + 2 * pp - (dd * (kk - 1) + 1)) // ss + 1 for n, pp, dd, kk, ss in zip((H, W), p, d, k, s, strict=True))
    if min(out) < 1:
        raise UserError(f"{op}: kernel_size={k} with dilation={d} and padding={p} does not fit the "
                        f"input of size (H, W)=({H}, {W}); the dilated kernel is at most H+2*padding")
    g = Geometry(k, s, p, d, reflect, (H, W), out)
    if check_centre:
        for axis, (c, n, o, ss) in enumerate(zip(g.centre, (H, W), out, s, strict=True)):
            if c < 0 or c + (o - 1) * ss > n - 1:
                raise UserError(
                    f"{op}: the centre tap falls outside the input along {'HW'[axis]} "
                    f"(kernel_size={k}, padding={p}, dilation={d}); use padding=(dilation*(k-1)+1)//2 "
                    "with an odd kernel_size")
    return g


def check_aggregation(x, weight, kernel_size, stride, padding, dilation, pad_mode) -> Geometry:
    g = geometry("aggregation", x, kernel_size, stride, padding, dilation, pad_mode)
    N, C = x.shape[:2]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise UserError(f"aggregation: weight must be 4-D (N, C/share, k*k, Ho*Wo), got {shape}")
    Nw, Cw, K, L = weight.shape
    L_expected = g.out_hw[0] * g.out_hw[1]
    if Nw != N or Cw < 1 or C % Cw != 0 or K != g.taps or L != L_expected:
        raise UserError(
            f"aggregation: weight shape {tuple(weight.shape)} does not match input {tuple(x.shape)} "
            f"with kernel_size={g.kernel}, stride={g.stride}, padding={g.padding}, dilation={g.dilation}; "
            f"expected ({N}, C/share with share dividing {C}, {g.taps}, {L_expected})")
    if weight.dtype != x.dtype or weight.device != x.device:
        raise UserError(f"aggregation: input and weight must share dtype and device, got "
                        f"{x.dtype}/{x.device} and {weight.dtype}/{weight.device}")
    return g


def check_subtraction2(x1, x2, kernel_size, stride, padding, dilation, pad_mode, op="subtraction2") -> Geometry:
    g = geometry(op, x1, kernel_size, stride, padding, dilation, pad_mode, check_centre=True)
    if not isinstance(x2, torch.Tensor) or tuple(x2.shape) != tuple(x1.shape):
        shape = tuple(x2.shape) if isinstance(x2, torch.Tensor) else type(x2).__name__
        raise UserError(f"{op}: the two inputs must have the same shape, got {tuple(x1.shape)} and {shape}")
    if x2.dtype != x1.dtype or x2.device != x1.device:
        raise UserError(f"{op}: the two inputs must share dtype and device, got "
                        f"{x1.dtype}/{x1.device} and {x2.dtype}/{x2.device}")
    return g

"""One way to turn a device option ('auto', 'cpu', 'cuda', 'cuda:N') into a torch.device, and one
way to report that a size did not fit in its memory."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..errors import UserError


def resolve_device(name, option: str = "device", local_rank: int | None = None) -> torch.device:
    """'auto' (or None) is CUDA when available, else the CPU; under torchrun (`local_rank` given)
    a CUDA device is this process's GPU. Anything else is a UserError naming `option`."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"{option} '{name}' is not valid; valid: auto, cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{option}={name} but no CUDA device is available; use cpu or auto")
        if local_rank is not None:
            device = torch.device("cuda", local_rank)
    return device


@contextmanager
def out_of_memory_hint(batch_size: int, img_size: int | None, batch_option: str = "--batch-size"):
    """Turn running out of memory inside the block (torch's OutOfMemoryError on a GPU, the CPU
    allocator's RuntimeError) into one UserError line naming the sizes asked for and smaller ones."""
    try:
        yield
    except RuntimeError as e:
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        size = f" and image size {img_size} px" if img_size else ""
        smaller_image = f"a smaller image size ({img_size // 2} px)" if img_size and img_size > 1 else ""
        tries = ([f"{batch_option} {batch_size // 2}"] if batch_size > 1 else []) + (
            [smaller_image] if smaller_image else [])
        raise UserError(f"out of memory at batch size {batch_size}{size}; try "
                        f"{' or '.join(tries) or 'a machine with more memory'}") from None


def resolve_precision(amp: str, channels_last, device: torch.device) -> tuple[str, bool]:
    """train.amp and train.channels_last as they apply on `device`: "auto" is bf16 autocast and
    channels_last on CUDA, float32 and NCHW elsewhere (the CPU gains little from either)."""
    cuda = device.type == "cuda"
    if amp == "auto":
        amp = "bf16" if cuda else "none"
    if channels_last == "auto":
        channels_last = cuda
    return amp, bool(channels_last)


def configure_cuda(deterministic: bool, tf32: bool) -> None:
    """cuDNN picks the fastest convolution algorithms (benchmark mode) unless the run must be
    deterministic; float32 matmuls and convolutions use TF32 tensor cores when `tf32`."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32

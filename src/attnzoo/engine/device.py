"""One way to turn a device option ('auto', 'cpu', 'cuda', 'cuda:N') into a torch.device."""
from __future__ import annotations

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

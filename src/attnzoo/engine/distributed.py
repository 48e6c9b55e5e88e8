"""torchrun integration: one process per device, gloo on CPU and nccl on GPU.

`torchrun --nproc_per_node N` (or multi-node rendezvous) sets RANK, LOCAL_RANK and WORLD_SIZE;
without them a run is a single process and every helper here is a no-op. Under torchrun the group
is joined even for one process, so `--nproc_per_node 1` runs the same DDP/SyncBatchNorm path as N.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False  # launched by torchrun: a process group exists, whatever its size

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that torchrun describes in the environment, if any."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")),
                    int(os.environ["WORLD_SIZE"]), enabled=True)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (in place) and return it; identity in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor of any first dimension from every process (rank order)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    sizes = torch.cat(sizes).tolist()  # one read of every process's size
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def broadcast_flag(flag: bool, device) -> bool:
    """Rank 0's decision (e.g. early stop) for every process."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def elastic_resume(resume: str | None, device=None) -> str | None:
    """'auto' in a group that torchrun restarted (TORCHELASTIC_RESTART_COUNT > 0) after a failure,
    so that it continues from last.pt by itself; `resume` otherwise. With `device`, in a process
    group, the processes agree (one all-reduce): torchrun restarts the workers of the other nodes
    too, but counts the restart only on the node that failed."""
    count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if device is not None and dist.is_initialized():
        t = torch.tensor([count], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        count = int(t.item())
    return "auto" if resume is None and count > 0 else resume


def check_same_checkpoint(checkpoint, device) -> None:
    """UserError unless every process found the same thing to continue from: every rank reads
    last.pt, so the run folder must be on storage that every node sees (one collective)."""
    from ..errors import UserError

    found = torch.tensor([0 if checkpoint is None else 1], device=device)
    dist.all_reduce(found, op=dist.ReduceOp.SUM)
    if 0 < int(found.item()) < dist.get_world_size():
        raise UserError(f"only {int(found.item())} of {dist.get_world_size()} processes see a checkpoint "
                        f"to continue from (this one: {checkpoint or 'none'}); every process reads "
                        "checkpoints/last.pt: put --out-dir on storage that every node shares")

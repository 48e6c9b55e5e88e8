"""Stopping a run without losing it: stop signals and the checkpoints inside an epoch.

A cluster ends a job with SIGTERM (SLURM, Kubernetes) or warns it with SIGUSR1 (SLURM's
`--signal=USR1@120`). Either one only sets a flag here; the step in flight finishes, last.pt is
written and the run raises `Preempted`, which the command turns into exit status 143 and a line
naming the command that continues. Ctrl-C stays Python's KeyboardInterrupt (status 130).

When a save is due, as seen after each optimizer step (`after_step`):
- every `train.checkpoint_steps` optimizer steps: a count every process shares, no communication;
- `train.checkpoint_minutes` after the last save, and a stop signal: facts of one process. In a
  single process they are read after every step. Under DDP the processes agree on them at log
  steps (every `train.log_every` steps) with one all-reduce of two numbers, and there only, so
  every rank saves and stops after the same step and no step waits on another process otherwise.
"""
from __future__ import annotations

import shlex
import signal
import threading
import time

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_STATUS = 143  # 128 + SIGTERM, what schedulers read as "terminated, may be requeued"


def continue_command(name: str, out_dir: str) -> str:
    """The command that continues the run folder `out_dir/name`."""
    return f"attnzoo train --name {shlex.quote(name)} --out-dir {shlex.quote(str(out_dir))} --resume auto"


class Preempted(Exception):
    """A stop signal ended the run after last.pt was written."""

    exit_status = EXIT_STATUS

    def __init__(self, signum: int, epoch: int, batch: int, step: int, command: str):
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after step {step} (epoch {epoch + 1}, batch {batch}); "
                         f"checkpoints/last.pt is saved; `{command}` continues (under torchrun: the same "
                         "launcher line; a restarted torchrun group continues by itself)")
        self.signum = signum


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with the command that continues it from its last checkpoint."""

    def __init__(self, command: str):
        super().__init__(f"interrupted; `{command}` continues from the last checkpoint")


class StopControl:
    """Decides after each step whether to write last.pt and whether to stop (see module docstring).

    Use as a context manager: the signal handlers are installed for its duration (main thread only,
    where Python delivers signals) and the previous ones restored after.
    """

    def __init__(self, checkpoint_steps: int, checkpoint_minutes: float, log_every: int,
                 distributed: bool, command: str):
        self.every = checkpoint_steps
        self.seconds = checkpoint_minutes * 60
        self.log_every = log_every
        self.distributed = distributed
        self.command = command
        self.signum: int | None = None
        self.stopping = False  # agreed: stop after the step that set it
        self.last_save = time.monotonic()
        self._previous: dict = {}

    def __enter__(self) -> "StopControl":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _note(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def _time_due(self) -> bool:
        return bool(self.seconds) and time.monotonic() - self.last_save >= self.seconds

    def _agree(self) -> tuple[bool, bool]:
        """(stop, time-based save) as every process sees it: one all-reduce (max) under DDP."""
        flags = (self.signum is not None, self._time_due())
        if not self.distributed:
            return flags
        nccl = torch.distributed.get_backend() == "nccl"
        t = torch.tensor([float(f) for f in flags], device=torch.cuda.current_device() if nccl else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        stop, late = t.tolist()  # one read of both
        return stop > 0, late > 0

    def after_step(self, step: int, epoch_end: bool, save) -> bool:
        """Called after optimizer step `step` (1-based over the run); calls `save()` (which writes
        last.pt on rank 0) when a save is due and returns whether to stop. `epoch_end`: the step
        ended the epoch, whose own save follows, so only a stop saves here."""
        stop, late = (False, False)
        if not self.distributed or step % self.log_every == 0:
            stop, late = self._agree()
        if stop or (not epoch_end and (late or (self.every and step % self.every == 0))):
            save()
            self.saved()
        if stop and self.distributed:
            torch.distributed.barrier()  # rank 0's save is complete before any process exits
        self.stopping = stop
        return stop

    def saved(self) -> None:
        """Restart the clock of `train.checkpoint_minutes` (after any write of last.pt)."""
        self.last_save = time.monotonic()

    def at_epoch_end(self) -> bool:
        """Whether to stop after the epoch's checkpoint (a signal during evaluation or the save)."""
        return self._agree()[0]

    def stop(self, epoch: int, batch: int, step: int):
        raise Preempted(self.signum or signal.SIGTERM, epoch, batch, step, self.command)

"""Ctrl-C and SIGTERM during training: the current step finishes, a resumable checkpoint is written, and the run
ends with the command that continues it.

A first SIGINT or SIGTERM only asks the loop to stop; the loop looks at the request between steps, so a step, an
evaluation or a checkpoint write in progress is never cut in half. A second Ctrl-C stops at once, as Python does
by default (the last checkpoint written stays). DataLoader workers ignore SIGINT: a Ctrl-C in a terminal reaches
the whole process group, and a worker that died of it would take the batch the loop still needs.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from types import FrameType
from typing import Any

import torch

from ssd.training.distributed import DistributedContext, all_reduce_sum

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """While active (a context manager), SIGINT and SIGTERM set `received` instead of ending the process.

    Handlers can only be installed from the main thread; elsewhere (a run started from a thread) signals keep
    their usual effect and `received` stays None.
    """

    def __init__(self, announce: bool = True):
        self.announce = announce  # rank 0 says what is happening; the others stop quietly
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.received is None and self.announce:
            # Written straight to the file descriptor: the signal may have come in the middle of a print,
            # and Python's buffered streams cannot be entered twice.
            notice = (
                f"\n{signal.Signals(number).name}: stopping after this step to write a resumable checkpoint "
            )
            os.write(2, (notice + "(Ctrl-C again to stop at once)\n").encode())
        self.received = number

    def agreed(self, context: DistributedContext) -> int | None:
        """The signal that asked to stop, once every process knows one did (a collective under torchrun:
        call it at the same point on every process). None while no process received one."""
        if not context.enabled:
            return self.received
        flag = torch.tensor([float(self.received or 0)])
        total = all_reduce_sum(flag, context).item()
        if total == 0:
            return None
        return self.received or signal.SIGTERM


def ignore_interrupts(worker_id: int) -> None:
    """A DataLoader worker's start: Ctrl-C is the main process's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resume_command(command: list[str], run_dir: object, world_size: int = 1) -> str:
    """The command that continues the run in `run_dir`, in the form the user started it (under torchrun with
    as many processes: a mid-epoch checkpoint goes on only with the world size it was written with)."""
    script = str(command[0]) if command else ""
    folder = shlex.quote(str(run_dir))
    if world_size > 1:
        entry = shlex.quote(script) if script.endswith(".py") else "-m ssd train"
        return f"torchrun --nproc-per-node {world_size} {entry} --resume {folder}"
    if script.endswith("train_ssd.py"):
        return f"python {shlex.quote(script)} --resume {folder}"
    return f"ssd train --resume {folder}"

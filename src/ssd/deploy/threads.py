"""How many threads inference runs on, and a block that runs PyTorch on a set number of them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """One thread per CPU that other processes are not already keeping busy (at least one).

    OpenMP's workers spin while they wait for each other, so on a machine whose CPUs are taken by other
    work, more threads are much slower, not faster: on the 2-core benchmark machine with two other busy
    processes, MobileNetV3-SSD took 110 ms per picture with 2 threads and 35 ms with 1. The 1-minute load
    average tells how many CPUs are busy; one unit of it may be this process itself.
    """
    cpus = available_cpus()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return cpus
    return max(1, min(cpus, cpus - int(busy - 1.0)))


def set_inference_threads(threads: int | None = None) -> int:
    """Set PyTorch's intra-op threads (`default_threads()` unless told); returns the count set."""
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to `count` inside the block, and restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

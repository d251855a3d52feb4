"""On Linux, keep the memory of freed tensors in the process for the next training step.

glibc's malloc takes a block of over 32 MB (one activation of a batch of 16 at 160x160 is 105 MB) straight from
the system with mmap and gives it back when it is freed, and it returns the free top of its heap too: every
step then page-faults its way into fresh memory again (mobilenetv3_ssd at batch 16: 148,000 page faults, 580
MB, a step). Asked with `mallopt` never to mmap a block and not to trim its heap, glibc keeps what a step
freed for the next one: 11,000 page faults a step, and the step 7% shorter (0.90 -> 0.84 s on 2 cores). The
process's memory stays near its peak, which every step reaches anyway (over 40 steps: 2535 MB against
2478). Other platforms are left as they are.
"""

from __future__ import annotations

import ctypes
import platform
import sys

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
LARGEST_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; True if it agreed (False off Linux, or without glibc)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # mallopt returns 1 on success
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD))

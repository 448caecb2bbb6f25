"""torch's thread pools sized to the cores this process may use: on 2 shared cores, torch's default (every
core the machine reports, plus an inter-op pool as large) oversubscribed them and ran twice as slow."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota where one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(cores, 1)


def set_threads(threads: int, interop: int) -> int:
    """Set both pools; returns the intra-op count. The inter-op pool can be sized only before torch first
    uses it (a second call in one process, as in the tests, keeps the first size: said on stderr)."""
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != interop:
        try:
            torch.set_num_interop_threads(interop)
        except RuntimeError:
            print(
                f"torch inter-op threads stay {torch.get_num_interop_threads()} (already in use; asked {interop})",
                file=sys.stderr,
            )
    return torch.get_num_threads()

"""Peak-memory probes for benchmarks: resident set size on CPU (sampled), allocator peak on CUDA."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


@contextmanager
def measure(device: torch.device):
    """Yields a dict filled on exit with ``seconds`` and ``peak_bytes`` (growth over the start)."""
    stats: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True) if device.type != "cuda" else None
    if sampler:
        sampler.start()
    start = time.perf_counter()
    try:
        yield stats
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stats["seconds"] = time.perf_counter() - start
        if sampler:
            stop.set()
            sampler.join()
            peak[0] = max(peak[0], rss_bytes())
            stats["peak_bytes"] = peak[0] - base
        else:
            stats["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base

"""Which device a pool process merges on, chosen once after the fork (no CUDA call happens before it).

``LORAMERGE_DEVICE`` ``auto`` or ``cuda`` on a machine with several visible GPUs gives pool process k
the GPU ``k mod count``, so ``worker_concurrency`` processes spread over the GPUs instead of all
landing on the first; ``loramerge serve --gpus`` goes further and starts one worker per GPU, each
seeing only its own (``CUDA_VISIBLE_DEVICES``, ``app.embedded``). ``cpu`` and an explicit ``cuda:N``
are kept as given.
"""

from __future__ import annotations

_pinned: dict[str, str] = {}


def gpu_for(process_index: int, gpu_count: int) -> int:
    """The GPU of pool process ``process_index`` (0-based) among ``gpu_count`` visible ones."""
    return process_index % gpu_count


def pin_process_device(setting: str, process_index: int) -> str:
    """Pin this (forked) pool process to its device and remember it; returns ``cpu`` or ``cuda:N``."""
    import torch

    device = setting
    if setting in ("auto", "cuda"):
        device = f"cuda:{gpu_for(process_index, torch.cuda.device_count())}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    _pinned["device"] = device
    return device


def process_device(setting: str) -> str:
    """The device pinned in this process, or the setting itself where nothing was pinned (tests, eager runs)."""
    return _pinned.get("device", setting)


def device_report(device: str) -> dict:
    """What the heartbeat says of the device: its name and, for a GPU, free and total memory in bytes."""
    if not device.startswith("cuda"):
        return {"device": device}
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)),
        "memory_free": free,
        "memory_total": total,
    }

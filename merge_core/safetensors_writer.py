"""Stream a safetensors file one tensor at a time: the header is planned from shapes and dtypes up
front, so a merged model never needs more than one tensor in memory."""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

TORCH_TO_ST = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}


def write_streaming(
    path: Path, plan: Iterable[tuple[str, torch.dtype, tuple[int, ...]]], produce: Callable[[str], torch.Tensor]
) -> None:
    """Write tensors named in ``plan`` (name, dtype, shape); ``produce(name)`` returns each in turn."""
    plan = list(plan)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape in plan:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": TORCH_TO_ST[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name, dtype, shape in plan:
            tensor = produce(name)
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise RuntimeError(f"{name}: produced {tensor.dtype}{list(tensor.shape)}, planned {dtype}{list(shape)}")
            fh.write(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``save_file``, but a failed write (disk full, quota, file size limit) raises OSError with its
    errno, as every other write does, so callers can tell storage faults from bugs."""
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None

"""Stream a safetensors file one tensor at a time: the header is planned from shapes and dtypes up
front, so a merged model never needs more than one tensor in memory."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

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

"""Read and check a safetensors header before any tensor is loaded.

The header is untrusted input: a hostile file can claim a multi-gigabyte header, offsets past the end
of the file, overlapping tensors or a size that does not match its dtype and shape. Each of those is a
``CorruptSafetensorsError`` here, before ``safetensors`` maps a single byte of data.

Messages say what is wrong without quoting what the file holds (a claimed length, a dtype, offsets,
undecodable bytes): a file that is not safetensors at all must not have its bytes read back through an
error. Only tensor names from a header that parsed as JSON appear, cut to ``NAME_SHOWN`` characters.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from merge_core.errors import NAME_SHOWN, AdapterTooLargeError, CorruptSafetensorsError, shown

DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path, *, max_bytes: int | None = None) -> dict[str, TensorInfo]:
    """Return ``name -> TensorInfo`` after checking every claim the header makes against the file."""
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise AdapterTooLargeError(
            f"{path.name} is {size} bytes, over the limit of {max_bytes}", path=str(path), size=size, limit=max_bytes
        )
    if size < 8:
        raise CorruptSafetensorsError(f"{path.name} is {size} bytes: too short to be safetensors", path=str(path))
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise CorruptSafetensorsError(
                f"{path.name}: its first 8 bytes claim a header longer than the file or over {MAX_HEADER_BYTES} bytes; "
                "not a safetensors file, or a truncated one",
                path=str(path),
            )
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptSafetensorsError(f"{path.name}: header is not valid UTF-8; not a safetensors file", path=str(path)) from None
    except (ValueError, RecursionError):  # JSONDecodeError, over-long integers, nesting past the parser's stack
        raise CorruptSafetensorsError(f"{path.name}: header is not valid JSON; not a safetensors file", path=str(path)) from None
    if not isinstance(header, dict):
        raise CorruptSafetensorsError(f"{path.name}: header is not a JSON object", path=str(path))
    header.pop("__metadata__", None)
    for name in header:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape: JSON Python reads, but not UTF-8
            raise CorruptSafetensorsError(f"{path.name}: a tensor name is not valid UTF-8", path=str(path)) from None
    return _check_entries(path, header, data_len=size - 8 - header_len)


def _check_entries(path: Path, header: dict, *, data_len: int) -> dict[str, TensorInfo]:
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        info = _parse_entry(path, name, entry)
        if info.end > data_len:
            raise CorruptSafetensorsError(
                f"{path.name}: tensor {shown(name)} ends past the end of the data section (truncated file or lying header)",
                path=str(path),
                tensor=name[:NAME_SHOWN],
            )
        infos[name] = info
    previous_end, previous = 0, None
    for name, info in sorted(infos.items(), key=lambda kv: kv[1].begin):
        if info.begin < previous_end:
            raise CorruptSafetensorsError(
                f"{path.name}: tensors {shown(previous)} and {shown(name)} overlap", path=str(path), tensor=name[:NAME_SHOWN]
            )
        previous_end, previous = info.end, name
    return infos


def _parse_entry(path: Path, name: str, entry: object) -> TensorInfo:
    def bad(why: str) -> CorruptSafetensorsError:
        return CorruptSafetensorsError(f"{path.name}: tensor {shown(name)} {why}", path=str(path), tensor=name[:NAME_SHOWN])

    if not isinstance(entry, dict):
        raise bad("has no header entry object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise bad(f"has an unknown dtype (known: {', '.join(DTYPE_SIZES)})")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad("has an invalid shape (not a list of non-negative integers)")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise bad("has invalid data_offsets (not two increasing non-negative integers)")
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise bad("has data_offsets that span a different size than its dtype and shape need")
    return TensorInfo(dtype=dtype, shape=tuple(shape), begin=offsets[0], end=offsets[1])

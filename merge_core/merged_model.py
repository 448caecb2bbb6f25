"""``output.kind = "merged_model"``: write ``W0 + ΔW`` for a base model folder, sharded, one tensor at a time."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from merge_core.engine import MergedAdapter
from merge_core.errors import BaseModelError, ShapeMismatchError
from merge_core.output import DTYPES
from merge_core.safetensors_header import read_header
from merge_core.safetensors_writer import ST_TO_TORCH, write_streaming

INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 1024**3


def base_weight_files(folder: Path) -> dict[str, Path]:
    """``tensor name -> file`` for a base model folder (single file or sharded with an index)."""
    if not folder.is_dir():
        raise BaseModelError(f"base model folder {str(folder)!r} does not exist", base_model=str(folder))
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return {name: folder / file for name, file in weight_map.items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BaseModelError(f"{folder} has no .safetensors weights (pickle .bin weights are not read)", base_model=str(folder))
    return {name: path for path in files for name in read_header(path)}


def write_merged_model(
    merged: MergedAdapter,
    base_folder: Path,
    out_folder: Path,
    *,
    dtype: str = "float32",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[str]:
    """Write ``W0 + ΔW`` for every merged module, and the base's other tensors unchanged, as (sharded)
    safetensors in ``out_folder``, one tensor in memory at a time; copy the base's config files.

    Args:
        merged: the merged update (``merge_adapters``).
        base_folder: the base model's folder (``model.safetensors`` or an index with shards).
        out_folder: created; must not hold the files yet.
        dtype: output dtype of the merged weights ("float32", "float16", "bfloat16").
        shard_bytes: largest output shard.
        progress: ``progress("write", done, total)`` per tensor.

    Returns:
        The names of the files written.

    Raises:
        BaseModelError: missing folder or weights, a merged module without a base weight, an unwritable dtype.
        ShapeMismatchError: a base weight whose shape is not the update's.
        CorruptSafetensorsError: a base shard's header does not hold.
    """
    files = base_weight_files(base_folder)
    headers = {path: read_header(path) for path in set(files.values())}
    targets = {f"{name}.weight": name for name in merged.modules}
    missing = sorted(set(targets) - set(files))
    if missing:
        raise BaseModelError(f"the base model has no weight for {len(missing)} merged modules, e.g. {missing[0]!r}")
    out_dtype = DTYPES[dtype]
    plan = []
    for name in sorted(files):
        info = headers[files[name]][name]
        if name in targets:
            B, A = merged.modules[targets[name]]
            shape = (A.shape[1], B.shape[0]) if merged.fan_in_fan_out else (B.shape[0], A.shape[1])
            if info.shape != shape:
                raise ShapeMismatchError(f"base weight {name!r} is {list(info.shape)}, the merged update is {list(shape)}")
        source_dtype = ST_TO_TORCH.get(info.dtype)
        if source_dtype is None:
            raise BaseModelError(f"base weight {name!r} has dtype {info.dtype}, which merged_model cannot write")
        plan.append((name, out_dtype if source_dtype.is_floating_point else source_dtype, info.shape))
    shards = _shard(plan, shard_bytes)
    out_folder.mkdir(parents=True, exist_ok=True)
    written, done = [], 0

    def produce(name: str) -> torch.Tensor:
        nonlocal done
        with safe_open(str(files[name]), framework="pt") as fh:
            tensor = fh.get_tensor(name)
        if name in targets:
            delta = merged.delta(targets[name])
            tensor = (tensor.double() + (delta.T if merged.fan_in_fan_out else delta)).to(out_dtype)
        elif tensor.is_floating_point():
            tensor = tensor.to(out_dtype)
        done += 1
        if progress is not None:
            progress("write", done, len(plan))
        return tensor

    weight_map = {}
    for k, shard in enumerate(shards):
        file = "model.safetensors" if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write_streaming(out_folder / file, shard, produce)
        weight_map.update({name: file for name, _, _ in shard})
        written.append(file)
    if len(shards) > 1:
        (out_folder / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
        written.append(INDEX_NAME)
    for extra in base_folder.iterdir():  # config, tokenizer, generation config: everything but weights
        if extra.is_file() and not extra.name.endswith((".safetensors", ".bin", ".pt", ".pth")) and extra.name != INDEX_NAME:
            shutil.copy2(extra, out_folder / extra.name)
            written.append(extra.name)
    return written


def _shard(plan, shard_bytes: int):
    shards, current, size = [], [], 0
    for name, dtype, shape in plan:
        nbytes = torch.empty((), dtype=dtype).element_size() * math.prod(shape)
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, dtype, shape))
        size += nbytes
    return shards + ([current] if current else [])

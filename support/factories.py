"""Build real adapter folders on disk (safetensors + adapter_config.json), as PEFT writes them."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from merge_core.adapters import LoraAdapter, LoraModule

SHAPES = {
    "model.layers.0.self_attn.q_proj": (24, 16),
    "model.layers.0.mlp.up_proj": (40, 16),
    "model.layers.1.self_attn.q_proj": (24, 16),
}


def random_factors(shapes: dict[str, tuple[int, int]], rank: int, seed: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return {
        name: (
            torch.randn(rank, inp, generator=gen, dtype=dtype) / inp**0.5,
            torch.randn(out, rank, generator=gen, dtype=dtype) * 0.1,
        )
        for name, (out, inp) in shapes.items()
    }


def write_adapter_folder(
    folder: Path,
    *,
    shapes: dict[str, tuple[int, int]] = SHAPES,
    rank: int = 4,
    seed: int = 0,
    config: dict | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a PEFT LoRA folder; ``config`` entries override the defaults, ``tensors`` the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    if tensors is None:
        tensors = {}
        for name, (A, B) in random_factors(shapes, rank, seed).items():
            tensors[f"base_model.model.{name}.lora_A.weight"] = A
            tensors[f"base_model.model.{name}.lora_B.weight"] = B
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    cfg = {
        "peft_type": "LORA",
        "base_model_name_or_path": "tiny-llama",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": sorted({n.rsplit(".", 1)[-1] for n in shapes}),
        "bias": "none",
    }
    cfg.update(config or {})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def write_base_model_folder(folder: Path, *, shapes: dict[str, tuple[int, int]] = SHAPES, seed: int = 0, shards: int = 1) -> Path:
    """A base model folder for ``SHAPES`` (``<module>.weight`` plus a non-linear tensor), as
    ``save_pretrained`` writes it: ``model.safetensors``, or ``shards`` files with
    ``model.safetensors.index.json``; ``config.json`` and ``tokenizer_config.json`` beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    weights = {f"{name}.weight": torch.randn(*shape, generator=gen) for name, shape in shapes.items()}
    weights["model.norm.weight"] = torch.ones(16)
    names = sorted(weights)
    if shards == 1:
        save_file(weights, str(folder / "model.safetensors"))
    else:
        weight_map = {}
        for k in range(shards):
            file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {name: weights[name] for name in names[k::shards]}
            save_file(part, str(folder / file))
            weight_map.update(dict.fromkeys(part, file))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "seed": seed}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    return folder


def memory_adapter(
    shapes: dict[str, tuple[int, int]], rank: int, seed: int, *, scale: float = 1.0, dtype=torch.float64
) -> LoraAdapter:
    return LoraAdapter(
        modules={n: LoraModule(A=A, B=B, scale=scale) for n, (A, B) in random_factors(shapes, rank, seed, dtype).items()},
        base_model="tiny-llama",
    )


def rewrite_safetensors_header(path: Path, mutate: Callable[[dict], None]) -> None:
    """Edit a safetensors header in place (to make it lie), keeping the data bytes as they are."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    mutate(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


SECRET = b"LEAKME-secret-key-bytes-0123456789"


def confinement_world(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(roots, data, outside)`` folders for confinement tests: the data dir holds a ``secret.key`` and
    ``outside`` a ``secret.bin``, both ``SECRET``, so a test can check that no answer leaks them."""
    roots, data, outside = tmp_path / "roots", tmp_path / "data", tmp_path / "outside"
    for folder in (roots, data, outside):
        folder.mkdir()
    (data / "secret.key").write_bytes(SECRET)
    (outside / "secret.bin").write_bytes(SECRET)
    return roots, data, outside

"""Write a merged adapter as a PEFT folder that ``PeftModel.from_pretrained`` loads unchanged: LoRA
factors (embedding LoRA in PEFT's embedding layout), merged biases as ``lora_B.bias`` where the layer
carries LoRA, and full tensors (kept full weights, other merged biases) under PEFT's own keys."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from merge_core.adapters import CONFIG_NAME, PEFT_PREFIX, WEIGHTS_NAME, FullWeight
from merge_core.base_model import BaseWeights
from merge_core.engine import MergedAdapter
from merge_core.errors import BaseModelRequiredError, BiasNotMergeableError, InvalidSpecError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def adapter_config(
    merged: MergedAdapter,
    *,
    task_type: str | None = None,
    modules_to_save: list[str] | None = None,
    lora_bias: bool = False,
    bias: str = "none",
) -> dict:
    """PEFT LoRA config whose scale is exactly 1 for every module: ``lora_alpha = r`` per module.

    ``rank_pattern``/``alpha_pattern`` keys are regex-escaped full module names, because PEFT reads
    them as patterns matched against a dotted suffix of each module name.
    """
    ranks = {name: B.shape[1] for name, (B, _) in merged.modules.items()}
    default_rank = max(ranks.values())
    pattern = {re.escape(name): rank for name, rank in sorted(ranks.items()) if rank != default_rank}
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": merged.base_model,
        "r": default_rank,
        "lora_alpha": default_rank,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in ranks}),
        "lora_dropout": 0.0,
        "fan_in_fan_out": merged.fan_in_fan_out,
        "bias": bias,
        "lora_bias": lora_bias,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": modules_to_save or None,
        "inference_mode": True,
    }


def write_adapter(
    merged: MergedAdapter,
    folder: Path,
    *,
    dtype: str = "float32",
    task_type: str | None = None,
    full_weights: dict[str, FullWeight] | None = None,
    bias_updates: dict[str, torch.Tensor] | None = None,
    base: BaseWeights | None = None,
    modules_to_save: list[str] | None = None,
) -> list[str]:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into ``folder``; return file names.

    Args:
        full_weights: whole tensors to ship, each under its own PEFT key (``FullWeight.key``).
        bias_updates: ``parameter name -> Δb``: ``lora_B.bias`` where the layer is a linear LoRA module,
            otherwise the full ``b0 + Δb`` (needs ``base``).
        modules_to_save: the config's ``modules_to_save`` (so PEFT wraps the modules whose weights ship).

    Raises:
        InvalidSpecError: an update kept dense (DoRA without ``output.rank``) cannot be an adapter.
        BaseModelRequiredError: a bias update outside a linear LoRA module and no ``base``.
    """
    if merged.dense:
        raise InvalidSpecError(
            f"{len(merged.dense)} merged updates are full rank (DoRA); an adapter needs output.rank to truncate them",
            modules=sorted(merged.dense)[:10],
        )
    folder.mkdir(parents=True, exist_ok=True)
    torch_dtype = DTYPES[dtype]
    tensors, linear = {}, [n for n in merged.modules if n not in merged.embeddings]
    for name, (B, A) in merged.modules.items():
        if name in merged.embeddings:  # PEFT's layout: ΔW = (lora_embedding_B @ lora_embedding_A)ᵀ
            tensors[f"{PEFT_PREFIX}{name}.lora_embedding_A"] = B.T.to(torch_dtype).contiguous()
            tensors[f"{PEFT_PREFIX}{name}.lora_embedding_B"] = A.T.to(torch_dtype).contiguous()
        else:
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A.to(torch_dtype).contiguous()
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B.to(torch_dtype).contiguous()
    for weight in (full_weights or {}).values():
        tensors[weight.key] = weight.tensor.to(torch_dtype if weight.tensor.is_floating_point() else weight.tensor.dtype)
    lora_biases, full_biases = _place_biases(bias_updates or {}, linear, base, embeddings=bool(merged.embeddings))
    for module in linear if lora_biases else []:  # lora_bias gives every LoRA layer a bias: zero where none changed
        B = merged.modules[module][0]
        tensors[f"{PEFT_PREFIX}{module}.lora_B.bias"] = lora_biases.get(module, torch.zeros(B.shape[0])).to(torch_dtype)
    for name, delta in full_biases.items():
        module = name.removesuffix(".bias")
        key = f"{PEFT_PREFIX}{module}.base_layer.bias" if module in merged.modules else f"{PEFT_PREFIX}{name}"
        tensors[key] = (base.get(name).double() + delta).to(torch_dtype)
    save_tensors(tensors, folder / WEIGHTS_NAME)
    config = adapter_config(
        merged,
        task_type=task_type,
        modules_to_save=modules_to_save,
        lora_bias=bool(lora_biases),
        bias="all" if full_biases else "none",
    )
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return [WEIGHTS_NAME, CONFIG_NAME]


def _place_biases(
    updates: dict[str, torch.Tensor], linear: list[str], base: BaseWeights | None, *, embeddings: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Where each merged bias goes: whole (``b0 + Δb``, a plain base bias that PEFT loads and merges like any
    other) wherever the base has that bias; as ``lora_B.bias`` (``lora_bias``) only where it has none, or
    when no base was given. Returns ``(module -> Δb for lora_B.bias, parameter -> Δb to write whole)``."""
    lora_biases, full_biases = {}, {}
    for name, delta in updates.items():
        module = name.removesuffix(".bias")
        if base is not None and name in base:
            full_biases[name] = delta
        elif module in linear:
            lora_biases[module] = delta
        elif base is None:
            raise BaseModelRequiredError(
                f"the merged bias {name!r} sits outside a linear LoRA layer, so the adapter must hold it whole (b0 + Δb): "
                "set output.base_model"
            )
        else:
            raise BiasNotMergeableError(f"the merged bias {name!r} has no layer to go to: the base model has no such bias")
    if lora_biases and embeddings:
        raise BiasNotMergeableError(
            "lora_bias on layers without a base bias cannot sit beside embedding LoRA in one PEFT adapter (PEFT has no "
            "lora_bias for embeddings); write a merged_model"
        )
    return lora_biases, full_biases


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

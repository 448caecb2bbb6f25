"""Write a merged adapter as a PEFT folder that ``PeftModel.from_pretrained`` loads unchanged."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from merge_core.adapters import CONFIG_NAME, PEFT_PREFIX, WEIGHTS_NAME
from merge_core.engine import MergedAdapter

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def adapter_config(merged: MergedAdapter, *, task_type: str | None = None) -> dict:
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
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "inference_mode": True,
    }


def write_adapter(merged: MergedAdapter, folder: Path, *, dtype: str = "float32", task_type: str | None = None) -> list[str]:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into ``folder``; return file names."""
    folder.mkdir(parents=True, exist_ok=True)
    torch_dtype = DTYPES[dtype]
    tensors = {}
    for name, (B, A) in merged.modules.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A.to(torch_dtype).contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B.to(torch_dtype).contiguous()
    save_tensors(tensors, folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(adapter_config(merged, task_type=task_type), indent=2) + "\n")
    return [WEIGHTS_NAME, CONFIG_NAME]


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

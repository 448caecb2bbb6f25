"""The base model's weights, read one tensor at a time: what DoRA updates, trained biases, the
``same_shapes`` check and ``merged_model`` output need, without ever holding the model in memory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from merge_core.errors import BaseModelError
from merge_core.safetensors_header import TensorInfo, read_header

INDEX_NAME = "model.safetensors.index.json"


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


def _quantization(folder: Path) -> str | None:
    """The quantization method a model folder's ``config.json`` declares (bitsandbytes, GPTQ, AWQ), if any."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    found = config.get("quantization_config") if isinstance(config, dict) else None
    if not found:
        return None
    return str(found.get("quant_method", "quantization_config")) if isinstance(found, dict) else "quantization_config"


class BaseWeights:
    """A base model folder's tensors by name: headers read once, each tensor read when asked."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = base_weight_files(folder)
        quantized = _quantization(folder)
        if quantized:
            raise BaseModelError(
                f"the base model {folder.name!r} is quantized ({quantized}): its packed weights are not W0; name the "
                "unquantized model as output.base_model (base_model_check: same_shapes accepts adapters trained on "
                "the quantized copy)",
                base_model=str(folder),
            )
        headers = {path: read_header(path) for path in set(self.files.values())}
        self.infos: dict[str, TensorInfo] = {name: headers[path][name] for name, path in self.files.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.infos[name].shape)

    def get(self, name: str) -> torch.Tensor:
        if name not in self.files:
            raise BaseModelError(
                f"the base model {self.folder.name!r} has no tensor {name!r}; is it the model the adapters were trained on?",
                base_model=str(self.folder),
                tensor=name,
            )
        with safe_open(str(self.files[name]), framework="pt") as fh:
            return fh.get_tensor(name)

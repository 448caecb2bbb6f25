"""Load PEFT LoRA adapter folders into scaled factors, refusing anything we cannot merge faithfully.

Order matters for safety: config first, then the safetensors header (shapes, ranks, key kinds), and
only then tensor data, which is finally checked for NaN/Inf. Pickle weights are refused unless the
caller opts in, since unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from merge_core.errors import (
    InvalidAdapterConfigError,
    NonFiniteError,
    PickleRefusedError,
    RankMismatchError,
    SourceNotFoundError,
    UnsupportedAdapterError,
)
from merge_core.safetensors_header import TensorInfo, read_header

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")
_UNSUPPORTED_KEYS = {
    "lora_magnitude_vector": "DoRA (use_dora) adapters",
    "lora_embedding_A": "LoRA on embedding layers",
    "lora_embedding_B": "LoRA on embedding layers",
    ".bias": "adapters with trained biases",
    "modules_to_save": "adapters with modules_to_save (full weights)",
}


@dataclass
class LoraModule:
    """One target module of one adapter: ``ΔW = scale · B @ A`` with A ``(r, in)`` and B ``(out, r)``."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B.shape[0], self.A.shape[1])


@dataclass
class LoraAdapter:
    """An adapter in memory. Module names are PEFT's, without the ``base_model.model.`` prefix."""

    modules: dict[str, LoraModule]
    base_model: str | None = None
    fan_in_fan_out: bool = False
    source: str = "<memory>"
    revision: str | None = None
    config: dict = field(default_factory=dict)


def module_scale(config: dict, module: str) -> tuple[int, float]:
    """Rank and scale PEFT would use for ``module``: ``rank_pattern``/``alpha_pattern`` first, rsLoRA aware."""
    rank = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8))
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
    denominator = math.sqrt(rank) if config.get("use_rslora") else rank
    return int(rank), float(alpha) / denominator


def _pattern_value(pattern: dict, module: str, default):
    # Same rule as peft.utils.other.get_pattern_key: the first key that matches a dotted suffix wins.
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_adapter(
    path: str | Path, *, allow_pickle: bool = False, max_bytes: int | None = None, revision: str | None = None
) -> LoraAdapter:
    """Read a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise SourceNotFoundError(f"adapter folder {str(folder)!r} does not exist", source=str(folder))
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if weights.is_file():
        header = read_header(weights, max_bytes=max_bytes)
        pairs = _pair_keys(header, folder)
        shapes = {m: (header[a].shape, header[b].shape) for m, (a, b) in pairs.items()}
        _check_ranks(config, shapes, folder)
        with safe_open(str(weights), framework="pt") as fh:
            tensors = {name: fh.get_tensor(name) for pair in pairs.values() for name in pair}
    elif (folder / PICKLE_WEIGHTS_NAME).is_file():
        tensors, pairs = _load_pickle(folder, config, allow_pickle)
    else:
        raise SourceNotFoundError(f"{folder} has no {WEIGHTS_NAME}", source=str(folder))
    modules = {}
    for module, (a_key, b_key) in pairs.items():
        A, B = tensors[a_key], tensors[b_key]
        for key, tensor in ((a_key, A), (b_key, B)):
            if not torch.isfinite(tensor).all():
                raise NonFiniteError(f"{folder.name}: tensor {key!r} contains NaN or Inf", source=str(folder), tensor=key)
        modules[module] = LoraModule(A=A, B=B, scale=module_scale(config, module)[1])
    return LoraAdapter(
        modules=modules,
        base_model=config.get("base_model_name_or_path"),
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
        source=str(folder),
        revision=revision or config.get("revision"),
        config=config,
    )


def read_config(folder: Path) -> dict:
    """Parse and vet ``adapter_config.json``: only plain LoRA (no DoRA, biases, modules_to_save) passes."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise InvalidAdapterConfigError(f"{folder} has no {CONFIG_NAME}", source=str(folder))
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterConfigError(f"{path}: not valid JSON ({exc})", source=str(folder)) from None
    if not isinstance(config, dict):
        raise InvalidAdapterConfigError(f"{path}: expected a JSON object", source=str(folder))
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise UnsupportedAdapterError(
            f"{folder.name}: peft_type {config.get('peft_type')!r} is not supported; only LORA adapters merge",
            source=str(folder),
        )
    for flag, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias"), ("use_qalora", "QA-LoRA")):
        if config.get(flag):
            raise UnsupportedAdapterError(f"{folder.name}: {what} adapters ({flag}=true) are not supported", source=str(folder))
    if config.get("bias", "none") != "none":
        raise UnsupportedAdapterError(
            f"{folder.name}: bias={config['bias']!r} trains biases; only bias='none' merges", source=str(folder)
        )
    if config.get("modules_to_save"):
        raise UnsupportedAdapterError(
            f"{folder.name}: modules_to_save holds full weights; remove it to merge", source=str(folder)
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key, 8)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise InvalidAdapterConfigError(f"{folder.name}: {key} must be a positive number, got {value!r}", source=str(folder))
    for key in ("rank_pattern", "alpha_pattern"):
        if not isinstance(config.get(key) or {}, dict):
            raise InvalidAdapterConfigError(f"{folder.name}: {key} must be an object", source=str(folder))
    return config


def _pair_keys(header: dict[str, TensorInfo], folder: Path) -> dict[str, tuple[str, str]]:
    sides: dict[str, dict[str, str]] = {}
    for key, info in header.items():
        for marker, what in _UNSUPPORTED_KEYS.items():
            if marker in key:
                raise UnsupportedAdapterError(
                    f"{folder.name}: tensor {key!r}: {what} are not supported", source=str(folder), tensor=key
                )
        match = _LORA_KEY.match(key)
        if match is None:
            raise UnsupportedAdapterError(f"{folder.name}: tensor {key!r} is not a LoRA factor", source=str(folder), tensor=key)
        if len(info.shape) != 2:
            raise UnsupportedAdapterError(
                f"{folder.name}: tensor {key!r} has shape {list(info.shape)}; only 2-D (linear) LoRA merges",
                source=str(folder),
                tensor=key,
            )
        module = match["module"].removeprefix(PEFT_PREFIX)
        sides.setdefault(module, {})[match["side"]] = key
    pairs = {}
    for module, found in sides.items():
        if set(found) != {"A", "B"}:
            missing = "lora_B" if "A" in found else "lora_A"
            raise RankMismatchError(f"{folder.name}: module {module!r} has no {missing}", source=str(folder), module=module)
        pairs[module] = (found["A"], found["B"])
    if not pairs:
        raise UnsupportedAdapterError(f"{folder.name}: no LoRA tensors found", source=str(folder))
    return pairs


def _check_ranks(config: dict, shapes: dict[str, tuple[tuple, tuple]], folder: Path) -> None:
    for module, (a_shape, b_shape) in shapes.items():
        if a_shape[0] != b_shape[1]:
            raise RankMismatchError(
                f"{folder.name}: module {module!r} has lora_A rank {a_shape[0]} but lora_B rank {b_shape[1]}",
                source=str(folder),
                module=module,
            )
        expected, _ = module_scale(config, module)
        if a_shape[0] != expected:
            raise RankMismatchError(
                f"{folder.name}: module {module!r} has rank {a_shape[0]} but the config (r/rank_pattern) says "
                f"{expected}; fix rank_pattern in {CONFIG_NAME}",
                source=str(folder),
                module=module,
            )


def _load_pickle(folder: Path, config: dict, allow_pickle: bool):
    if not allow_pickle:
        raise PickleRefusedError(
            f"{folder.name} ships only {PICKLE_WEIGHTS_NAME} (pickle), which can run code when loaded; convert it to "
            f"{WEIGHTS_NAME} or opt in with allow_pickle",
            source=str(folder),
        )
    state = torch.load(folder / PICKLE_WEIGHTS_NAME, map_location="cpu", weights_only=True)
    infos = {k: TensorInfo(str(v.dtype), tuple(v.shape), 0, 0) for k, v in state.items()}
    pairs = _pair_keys(infos, folder)
    _check_ranks(config, {m: (infos[a].shape, infos[b].shape) for m, (a, b) in pairs.items()}, folder)
    return state, pairs

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
    NAME_SHOWN,
    InvalidAdapterConfigError,
    NonFiniteError,
    PickleRefusedError,
    RankMismatchError,
    SourceNotFoundError,
    UnsupportedAdapterError,
    shown,
)
from merge_core.patterns import MatchBudget, PatternTable
from merge_core.safetensors_header import TensorInfo, read_header

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."
MAX_CONFIG_BYTES = 16 << 20  # as the service's staging limit
MAX_TENSOR_NAME_CHARS = 1_000  # real PEFT keys are under 200
MAX_RANK = 1 << 20
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
    return ScaleRule(config)(module)


class ScaleRule:
    """``module -> (rank, scale)`` for one adapter config, checked once: ``r``, ``lora_alpha`` and the pattern
    values must be finite and positive (ranks whole numbers), and every pattern key a regex we can match
    in linear time (``merge_core.patterns``). Refusals are ``InvalidAdapterConfigError`` or its subclass
    ``UnsupportedPatternError``, and name the field to fix."""

    def __init__(self, config: dict, *, where: str = CONFIG_NAME) -> None:
        self.r = _rank(config.get("r", 8), "r", where)
        self.lora_alpha = _alpha(config.get("lora_alpha", 8), "lora_alpha", where)
        self.rslora = bool(config.get("use_rslora"))
        budget = MatchBudget()
        tables = {}
        for name, check in (("rank_pattern", _rank), ("alpha_pattern", _alpha)):
            pattern = config.get(name) or {}
            if not isinstance(pattern, dict):
                raise InvalidAdapterConfigError(
                    f"{where}: {name} must be an object of module regex -> value; it is {_kind(pattern)}", field=name
                )
            for key, value in pattern.items():
                check(value, f"{name}[{shown(key, 80)}]", where)
            tables[name] = PatternTable(pattern, field=name, where=where, budget=budget)
        self.ranks, self.alphas = tables["rank_pattern"], tables["alpha_pattern"]
        self._seen: dict[str, tuple[int, float]] = {}

    def __call__(self, module: str) -> tuple[int, float]:
        if module not in self._seen:
            rank = self.ranks.value(module, self.r)
            alpha = self.alphas.value(module, self.lora_alpha)
            self._seen[module] = (rank, float(alpha) / (math.sqrt(rank) if self.rslora else rank))
        return self._seen[module]


def _kind(value: object) -> str:
    """What a config value is, for messages that must not echo the file's content."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    if isinstance(value, float) and not math.isfinite(value):
        return "Infinity or NaN (JSON Infinity, NaN, or a number too large for a float such as 1e400)"
    if isinstance(value, int) and value > MAX_RANK:
        return "a number too large"
    if isinstance(value, (int, float)) and value <= 0:
        return "zero or negative"
    if isinstance(value, float) and not value.is_integer():
        return "not a whole number"
    return "a number of the wrong type (write a whole number such as 8, not 8.0)"


def _rank(value: object, field: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RANK:
        return value
    raise InvalidAdapterConfigError(
        f"{where}: {field} must be a LoRA rank, a whole number from 1 to {MAX_RANK}; it is {_kind(value)}", field=field
    )


def _alpha(value: object, field: str, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number) and number > 0:
            return number
        if not math.isfinite(number):
            value = math.inf
    raise InvalidAdapterConfigError(f"{where}: {field} must be a finite positive number; it is {_kind(value)}", field=field)


def load_adapter(
    path: str | Path, *, allow_pickle: bool = False, max_bytes: int | None = None, revision: str | None = None
) -> LoraAdapter:
    """Read a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) into scaled factors.

    Args:
        path: the folder.
        allow_pickle: read ``adapter_model.bin`` (torch pickle, weights only) when there is no safetensors
            file. Off by default: unpickling untrusted files can run code.
        max_bytes: refuse a weights file larger than this before reading it.
        revision: recorded with the adapter (provenance); defaults to the config's ``revision``.

    Raises:
        SourceNotFoundError, InvalidAdapterConfigError, UnsupportedPatternError, UnsupportedAdapterError,
        CorruptSafetensorsError, AdapterTooLargeError, RankMismatchError, NonFiniteError, PickleRefusedError:
        each with its ``code``, checked in that order: config, header, then tensor data.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SourceNotFoundError(f"adapter folder {str(folder)!r} does not exist", source=str(folder))
    config, scales = _read_config(folder)
    weights = folder / WEIGHTS_NAME
    if weights.is_file():
        header = read_header(weights, max_bytes=max_bytes)
        pairs = _pair_keys(header, folder)
        shapes = {m: (header[a].shape, header[b].shape) for m, (a, b) in pairs.items()}
        _check_ranks(scales, shapes, folder)
        with safe_open(str(weights), framework="pt") as fh:
            tensors = {name: fh.get_tensor(name) for pair in pairs.values() for name in pair}
    elif (folder / PICKLE_WEIGHTS_NAME).is_file():
        tensors, pairs = _load_pickle(folder, scales, allow_pickle)
    else:
        raise SourceNotFoundError(f"{folder} has no {WEIGHTS_NAME}", source=str(folder))
    modules = {}
    for module, (a_key, b_key) in pairs.items():
        A, B = tensors[a_key], tensors[b_key]
        for key, tensor in ((a_key, A), (b_key, B)):
            if not torch.isfinite(tensor).all():
                raise NonFiniteError(
                    f"{folder.name}: tensor {shown(key)} contains NaN or Inf", source=str(folder), tensor=key[:NAME_SHOWN]
                )
        modules[module] = LoraModule(A=A, B=B, scale=scales(module)[1])
    return LoraAdapter(
        modules=modules,
        base_model=config.get("base_model_name_or_path"),
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
        source=str(folder),
        revision=revision or config.get("revision"),
        config=config,
    )


def read_config(folder: Path) -> dict:
    """Parse and vet ``adapter_config.json``: only plain LoRA (no DoRA, biases, modules_to_save) passes,
    with a finite positive ``r``/``lora_alpha`` and pattern keys we can match safely (``ScaleRule``)."""
    return _read_config(folder)[0]


def _read_config(folder: Path) -> tuple[dict, ScaleRule]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise InvalidAdapterConfigError(f"{folder} has no {CONFIG_NAME}", source=str(folder))
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise InvalidAdapterConfigError(
            f"{path}: {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit for a config", source=str(folder)
        )
    # Messages below never quote the file's bytes: only positions, kinds of value, and bounded names.
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidAdapterConfigError(f"{path}: not valid UTF-8; save it as UTF-8 JSON", source=str(folder)) from None
    except json.JSONDecodeError as exc:
        raise InvalidAdapterConfigError(
            f"{path}: not valid JSON (error at line {exc.lineno}, column {exc.colno}); fix the syntax", source=str(folder)
        ) from None
    except (ValueError, RecursionError):  # integers over 4300 digits, nesting deeper than the parser's stack
        raise InvalidAdapterConfigError(
            f"{path}: not JSON we can read (numbers too long or nesting too deep)", source=str(folder)
        ) from None
    if not isinstance(config, dict):
        raise InvalidAdapterConfigError(f"{path}: expected a JSON object", source=str(folder))
    peft_type = config.get("peft_type", "")
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA":
        what = shown(peft_type, 40) if isinstance(peft_type, str) else _kind(peft_type)
        raise UnsupportedAdapterError(
            f"{folder.name}: peft_type {what} is not supported; only LORA adapters merge", source=str(folder)
        )
    for flag, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias"), ("use_qalora", "QA-LoRA")):
        if config.get(flag):
            raise UnsupportedAdapterError(f"{folder.name}: {what} adapters ({flag}=true) are not supported", source=str(folder))
    bias = config.get("bias", "none")
    if bias != "none":
        what = shown(bias, 40) if isinstance(bias, str) else _kind(bias)
        raise UnsupportedAdapterError(f"{folder.name}: bias={what} trains biases; only bias='none' merges", source=str(folder))
    if config.get("modules_to_save"):
        raise UnsupportedAdapterError(
            f"{folder.name}: modules_to_save holds full weights; remove it to merge", source=str(folder)
        )
    try:
        scales = ScaleRule(config, where=f"{folder.name}/{CONFIG_NAME}")
    except InvalidAdapterConfigError as exc:
        exc.details.setdefault("source", str(folder))
        raise
    return config, scales


def _pair_keys(header: dict[str, TensorInfo], folder: Path) -> dict[str, tuple[str, str]]:
    sides: dict[str, dict[str, str]] = {}
    for key, info in header.items():

        def refuse(why: str, key=key) -> UnsupportedAdapterError:
            return UnsupportedAdapterError(
                f"{folder.name}: tensor {shown(key)} {why}", source=str(folder), tensor=key[:NAME_SHOWN]
            )

        if len(key) > MAX_TENSOR_NAME_CHARS:
            raise refuse(
                f"has a name of {len(key)} characters, over the limit of {MAX_TENSOR_NAME_CHARS}; not a PEFT module name"
            )
        for marker, what in _UNSUPPORTED_KEYS.items():
            if marker in key:
                raise refuse(f"belongs to {what}, which are not supported")
        match = _LORA_KEY.match(key)
        if match is None:
            raise refuse("is not a LoRA factor (base_model.model.<module>.lora_A/lora_B.weight)")
        if len(info.shape) != 2:
            raise refuse(f"has {len(info.shape)} dimensions; only 2-D (linear) LoRA merges")
        module = match["module"].removeprefix(PEFT_PREFIX)
        sides.setdefault(module, {})[match["side"]] = key
    pairs = {}
    for module, found in sides.items():
        if set(found) != {"A", "B"}:
            missing = "lora_B" if "A" in found else "lora_A"
            raise RankMismatchError(
                f"{folder.name}: module {shown(module)} has no {missing}", source=str(folder), module=module[:NAME_SHOWN]
            )
        pairs[module] = (found["A"], found["B"])
    if not pairs:
        raise UnsupportedAdapterError(f"{folder.name}: no LoRA tensors found", source=str(folder))
    return pairs


def _check_ranks(scales: ScaleRule, shapes: dict[str, tuple[tuple, tuple]], folder: Path) -> None:
    for module, (a_shape, b_shape) in shapes.items():
        name = shown(module)
        if a_shape[0] != b_shape[1]:
            raise RankMismatchError(
                f"{folder.name}: module {name} has lora_A rank {a_shape[0]} but lora_B rank {b_shape[1]}",
                source=str(folder),
                module=module[:NAME_SHOWN],
            )
        expected, _ = scales(module)
        if a_shape[0] != expected:
            raise RankMismatchError(
                f"{folder.name}: module {name} has rank {a_shape[0]} but the config (r/rank_pattern) says "
                f"{expected}; fix rank_pattern in {CONFIG_NAME}",
                source=str(folder),
                module=module[:NAME_SHOWN],
            )


def _load_pickle(folder: Path, scales: ScaleRule, allow_pickle: bool):
    if not allow_pickle:
        raise PickleRefusedError(
            f"{folder.name} ships only {PICKLE_WEIGHTS_NAME} (pickle), which can run code when loaded; convert it to "
            f"{WEIGHTS_NAME} or opt in with allow_pickle",
            source=str(folder),
        )
    state = torch.load(folder / PICKLE_WEIGHTS_NAME, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UnsupportedAdapterError(
            f"{folder.name}: {PICKLE_WEIGHTS_NAME} is not a state dict of named tensors", source=str(folder)
        )
    infos = {k: TensorInfo(str(v.dtype), tuple(v.shape), 0, 0) for k, v in state.items()}
    pairs = _pair_keys(infos, folder)
    _check_ranks(scales, {m: (infos[a].shape, infos[b].shape) for m, (a, b) in pairs.items()}, folder)
    return state, pairs

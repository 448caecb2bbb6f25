"""Load PEFT LoRA adapter folders into scaled factors, refusing anything we cannot merge faithfully.

Order matters for safety: config first, then the safetensors header (shapes, ranks, key kinds), and
only then tensor data, which is finally checked for NaN/Inf. Pickle weights are refused unless the
caller opts in, since unpickling runs arbitrary code.

What PEFT saves beside the LoRA factors is kept, each kind for what it is (METHOD.md §7): DoRA
magnitudes, embedding LoRA (turned into the linear layout at load), ``lora_bias`` vectors, and full
weights (``modules_to_save`` such as classification heads, saved ``base_layer`` weights of resized
embeddings, biases trained under ``bias: all|lora_only``) keyed by the model's parameter name.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open

from merge_core.errors import (
    NAME_SHOWN,
    InvalidAdapterConfigError,
    NonFiniteError,
    PickleRefusedError,
    RankMismatchError,
    ShapeMismatchError,
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
_ADAPTER_NAME = r"(?:\.[A-Za-z0-9_-]+)?"  # PEFT < 0.4 kept the adapter name ("default") in saved keys
_LORA_KEY = re.compile(rf"^(?P<module>.+)\.lora_(?P<side>[AB]){_ADAPTER_NAME}\.weight$")
_EMBEDDING_KEY = re.compile(rf"^(?P<module>.+)\.lora_embedding_(?P<side>[AB]){_ADAPTER_NAME}$")
_MAGNITUDE_KEY = re.compile(rf"^(?P<module>.+)\.lora_magnitude_vector{_ADAPTER_NAME}(?:\.weight)?$")
_LORA_BIAS_KEY = re.compile(rf"^(?P<module>.+)\.lora_B{_ADAPTER_NAME}\.bias$")
_SAVED_COPY_KEY = re.compile(
    rf"^(?P<module>.+)\.(?P<kind>base_layer|modules_to_save{_ADAPTER_NAME}|original_module)\.(?P<param>[^.]+)$"
)
_UNSUPPORTED_KEYS = {  # marker in a key -> what it belongs to
    "trainable_tokens": "trainable tokens (trainable_token_indices), a sparse embedding update",
    "prompt_embeddings": "prompt tuning, which is not LoRA",
    "lora_": "a LoRA variant we do not merge",
}
_REFUSED_CONFIG = {  # config key -> why its adapters do not merge
    "use_qalora": "QA-LoRA adapters (use_qalora) pool their inputs; they are not a weight update",
    "enable_lora": "old fused-QKV LoRA (enable_lora, from loralib or PEFT < 0.3); current PEFT cannot load it either, so "
    "it has to be converted to per-projection lora_A/lora_B (or retrained)",
    "layer_replication": "layer_replication changes the model's structure",
    "trainable_token_indices": "trainable tokens (trainable_token_indices) are a sparse embedding update, not LoRA",
    "target_parameters": "LoRA on parameters (target_parameters, e.g. MoE experts)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens) applies only after its invocation tokens",
}
FullWeightKind = Literal["modules_to_save", "saved_base_layer", "trained_bias"]


@dataclass(frozen=True)
class StoredTensor:
    """A tensor left in its safetensors file until a batch of modules needs it, so a merge holds one batch
    of factors in memory, not every adapter (checked finite when the adapter was loaded)."""

    path: Path
    key: str
    stored_shape: tuple[int, ...]
    transpose: bool = False  # embedding LoRA: held in the linear layout

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored_shape[::-1] if self.transpose else self.stored_shape

    def load(self) -> torch.Tensor:
        with safe_open(str(self.path), framework="pt") as fh:
            tensor = fh.get_tensor(self.key)
        return tensor.T.contiguous() if self.transpose else tensor


def _materialized(tensor: torch.Tensor | StoredTensor) -> torch.Tensor:
    return tensor.load() if isinstance(tensor, StoredTensor) else tensor


class LoraModule:
    """One target module of one adapter: ``ΔW = scale · B @ A`` with A ``(r, in)`` and B ``(out, r)``.

    ``A`` and ``B`` are read from the adapter file each time they are asked for (``StoredTensor``) unless
    they were given in memory: hold on to what you read only as long as you need it.
    Embedding LoRA is held in the same layout, already transposed (``B = lora_embedding_Aᵀ``,
    ``A = lora_embedding_Bᵀ``), so ``ΔW`` has the embedding weight's shape ``(num_embeddings, dim)``.
    ``magnitude`` (DoRA's ``m``, one per output row) makes the update depend on the base weight:
    ``ΔW = m ⊙ (W0 + s B A) / ‖W0 + s B A‖_row − W0``. ``bias`` is ``lora_B.bias`` (``lora_bias``): the
    layer's bias changes by ``scale · bias``.
    """

    def __init__(
        self,
        A: torch.Tensor | StoredTensor,
        B: torch.Tensor | StoredTensor,
        scale: float,
        embedding: bool = False,
        magnitude: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> None:
        self._A, self._B, self.scale = A, B, scale
        self.embedding, self.magnitude, self.bias = embedding, magnitude, bias

    @property
    def A(self) -> torch.Tensor:
        return _materialized(self._A)

    @property
    def B(self) -> torch.Tensor:
        return _materialized(self._B)

    @property
    def dora(self) -> bool:
        return self.magnitude is not None

    @property
    def rank(self) -> int:
        return self._A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self._B.shape[0], self._A.shape[1])


@dataclass
class FullWeight:
    """A whole tensor an adapter replaces, under the model's parameter name (``score.weight``).

    ``key`` is where the adapter file keeps it (to write it back the same way); ``kind`` says why it is
    there: ``modules_to_save`` (a trained copy of a module, e.g. a classification head), ``saved_base_layer``
    (a base layer PEFT saved whole, e.g. embeddings resized for new tokens), ``trained_bias`` (a bias
    trained under ``bias: all|lora_only``; its update needs the base's bias)."""

    tensor: torch.Tensor
    key: str
    kind: FullWeightKind


@dataclass
class LoraAdapter:
    """An adapter in memory. Module names are PEFT's, without the ``base_model.model.`` prefix."""

    modules: dict[str, LoraModule]
    full_weights: dict[str, FullWeight] = field(default_factory=dict)
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
        plan = _plan_keys(header, folder, config)
        _check_shapes(scales, plan, header, folder)
        factor_keys = {k for a, b, _ in plan.pairs.values() for k in (a, b)}
        tensors = {}
        with safe_open(str(weights), framework="pt") as fh:  # every tensor checked, one at a time
            for key in plan.keys():
                tensor = fh.get_tensor(key)
                _check_finite(tensor, key, folder)
                if key in factor_keys:  # factors stay in the file until a batch reads them
                    tensor = StoredTensor(weights, key, tuple(header[key].shape))
                tensors[key] = tensor
    elif (folder / PICKLE_WEIGHTS_NAME).is_file():
        tensors, plan = _load_pickle(folder, scales, config, allow_pickle)
        for key, tensor in tensors.items():
            _check_finite(tensor, key, folder)
    else:
        raise SourceNotFoundError(f"{folder} has no {WEIGHTS_NAME}", source=str(folder))
    modules = {}
    for module, (a_key, b_key, embedding) in plan.pairs.items():
        A, B = tensors[a_key], tensors[b_key]
        if embedding:  # PEFT: ΔW = (lora_embedding_B @ lora_embedding_A)ᵀ · s, shaped like the embedding weight
            A, B = _transposed(B), _transposed(A)
        magnitude = tensors[plan.magnitudes[module]] if module in plan.magnitudes else None
        bias = tensors[plan.lora_biases[module]] if module in plan.lora_biases else None
        modules[module] = LoraModule(A=A, B=B, scale=scales(module)[1], embedding=embedding, magnitude=magnitude, bias=bias)
    full = {name: FullWeight(tensors[key], key, kind) for name, (key, kind) in plan.full.items()}
    return LoraAdapter(
        modules=modules,
        full_weights=full,
        base_model=config.get("base_model_name_or_path"),
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
        source=str(folder),
        revision=revision or config.get("revision"),
        config=config,
    )


def _check_finite(tensor: torch.Tensor, key: str, folder: Path) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise NonFiniteError(
            f"{folder.name}: tensor {shown(key)} contains NaN or Inf", source=str(folder), tensor=key[:NAME_SHOWN]
        )


def _transposed(tensor: torch.Tensor | StoredTensor) -> torch.Tensor | StoredTensor:
    if isinstance(tensor, StoredTensor):
        return StoredTensor(tensor.path, tensor.key, tensor.stored_shape, transpose=True)
    return tensor.T.contiguous()


def read_config(folder: Path) -> dict:
    """Parse and vet ``adapter_config.json``: a LoRA config (DoRA, biases, modules_to_save included; the
    forms in ``_REFUSED_CONFIG`` refused), with a finite positive ``r``/``lora_alpha`` and pattern keys we
    can match safely (``ScaleRule``)."""
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
    for key, why in _REFUSED_CONFIG.items():
        if config.get(key):
            raise UnsupportedAdapterError(f"{folder.name}: {why}; it cannot be merged", source=str(folder), field=key)
    bias = config.get("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        what = shown(bias, 40) if isinstance(bias, str) else _kind(bias)
        raise InvalidAdapterConfigError(
            f"{folder.name}: bias={what}; PEFT knows 'none', 'all' and 'lora_only'", source=str(folder), field="bias"
        )
    saved = config.get("modules_to_save") or []
    if not isinstance(saved, list) or not all(isinstance(m, str) for m in saved):
        raise InvalidAdapterConfigError(
            f"{folder.name}: modules_to_save must be a list of module names; it is {_kind(saved)}",
            source=str(folder),
            field="modules_to_save",
        )
    try:
        scales = ScaleRule(config, where=f"{folder.name}/{CONFIG_NAME}")
    except InvalidAdapterConfigError as exc:
        exc.details.setdefault("source", str(folder))
        raise
    return config, scales


@dataclass
class _KeyPlan:
    """Every tensor of an adapter file by what it is; tensors PEFT saves but never loads are left out."""

    pairs: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # module -> (A key, B key, embedding)
    magnitudes: dict[str, str] = field(default_factory=dict)  # module -> DoRA magnitude key
    lora_biases: dict[str, str] = field(default_factory=dict)  # module -> lora_B.bias key
    full: dict[str, tuple[str, FullWeightKind]] = field(default_factory=dict)  # parameter name -> (key, kind)

    def keys(self) -> list[str]:
        keys = [k for a, b, _ in self.pairs.values() for k in (a, b)]
        return keys + list(self.magnitudes.values()) + list(self.lora_biases.values()) + [k for k, _ in self.full.values()]


def _plan_keys(header: dict[str, TensorInfo], folder: Path, config: dict) -> _KeyPlan:
    plan, sides = _KeyPlan(), {}
    saved_modules = config.get("modules_to_save") or []
    trains_biases = config.get("bias", "none") != "none"
    for key in sorted(header):  # sorted: a plain key is seen before its ``modules_to_save`` twin

        def refuse(why: str, key=key) -> UnsupportedAdapterError:
            return UnsupportedAdapterError(
                f"{folder.name}: tensor {shown(key)} {why}", source=str(folder), tensor=key[:NAME_SHOWN]
            )

        if len(key) > MAX_TENSOR_NAME_CHARS:
            raise refuse(
                f"has a name of {len(key)} characters, over the limit of {MAX_TENSOR_NAME_CHARS}; not a PEFT module name"
            )
        name = key.removeprefix(PEFT_PREFIX)
        if found := _LORA_KEY.match(name) or _EMBEDDING_KEY.match(name):
            embedding = "lora_embedding_" in name
            slot = sides.setdefault(found["module"], {})
            if slot.setdefault("embedding", embedding) != embedding:
                raise refuse("mixes linear and embedding LoRA factors for one module")
            slot[found["side"]] = key
        elif found := _MAGNITUDE_KEY.match(name):
            plan.magnitudes[found["module"]] = key
        elif found := _LORA_BIAS_KEY.match(name):
            plan.lora_biases[found["module"]] = key
        elif found := _SAVED_COPY_KEY.match(name):
            param = f"{found['module']}.{found['param']}"
            if found["kind"] == "original_module" or param in plan.full:
                continue  # the frozen original of a modules_to_save wrapper, or a twin of a plain key
            if found["kind"] == "base_layer":
                kind = "trained_bias" if found["param"] == "bias" and trains_biases else "saved_base_layer"
            else:
                kind = "modules_to_save"
            plan.full[param] = (key, kind)
        elif marker := next((m for m in _UNSUPPORTED_KEYS if m in name), None):
            raise refuse(f"belongs to {_UNSUPPORTED_KEYS[marker]}, which cannot be merged")
        else:
            module = name.rsplit(".", 1)[0]
            in_saved = any(module == m or module.endswith(f".{m}") or module.startswith(f"{m}.") for m in saved_modules)
            plan.full[name] = (
                key,
                "trained_bias" if name.endswith(".bias") and trains_biases and not in_saved else "modules_to_save",
            )
    for module, found in sides.items():
        missing = [side for side in ("A", "B") if side not in found]
        if missing:
            prefix = "lora_embedding_" if found["embedding"] else "lora_"
            raise RankMismatchError(
                f"{folder.name}: module {shown(module)} has no {prefix}{missing[0]}",
                source=str(folder),
                module=module[:NAME_SHOWN],
            )
        plan.pairs[module] = (found["A"], found["B"], found["embedding"])
    for extra, what in ((plan.magnitudes, "DoRA magnitude"), (plan.lora_biases, "lora_B bias")):
        for module, key in extra.items():
            if module not in plan.pairs:
                raise RankMismatchError(
                    f"{folder.name}: {what} {shown(key)} has no LoRA factors beside it",
                    source=str(folder),
                    module=module[:NAME_SHOWN],
                )
            if plan.pairs[module][2] and extra is plan.magnitudes:
                raise UnsupportedAdapterError(
                    f"{folder.name}: module {shown(module)} is DoRA on an embedding layer, which cannot be merged yet",
                    source=str(folder),
                    module=module[:NAME_SHOWN],
                )
    if not plan.pairs:
        raise UnsupportedAdapterError(f"{folder.name}: no LoRA tensors found", source=str(folder))
    linear = [m for m, (_, _, embedding) in plan.pairs.items() if not embedding]
    if bool(config.get("use_dora")) != bool(plan.magnitudes) or (plan.magnitudes and set(linear) - set(plan.magnitudes)):
        missing = sorted(set(linear) - set(plan.magnitudes))
        why = (
            f"use_dora is true but {len(missing)} linear modules have no lora_magnitude_vector, e.g. {shown(missing[0])}"
            if config.get("use_dora") and missing
            else "use_dora is false but the weights hold DoRA magnitude vectors (lora_magnitude_vector)"
        )
        raise InvalidAdapterConfigError(
            f"{folder.name}: {why}; PEFT would run it otherwise than the weights say, so it is not merged",
            source=str(folder),
            field="use_dora",
        )
    return plan


def _check_shapes(scales: ScaleRule, plan: _KeyPlan, header: dict[str, TensorInfo], folder: Path) -> None:
    for module, (a_key, b_key, _) in plan.pairs.items():
        name = shown(module)
        a_shape, b_shape = header[a_key].shape, header[b_key].shape

        def refuse(why: str, name=name, module=module) -> RankMismatchError:
            return RankMismatchError(f"{folder.name}: module {name} {why}", source=str(folder), module=module[:NAME_SHOWN])

        if len(a_shape) != 2 or len(b_shape) != 2:
            raise UnsupportedAdapterError(
                f"{folder.name}: module {name} has {max(len(a_shape), len(b_shape))}-D factors; only linear and embedding LoRA "
                "merge (not convolutions)",
                source=str(folder),
                module=module[:NAME_SHOWN],
            )
        if a_shape[0] != b_shape[1]:
            raise refuse(f"has lora_A rank {a_shape[0]} but lora_B rank {b_shape[1]}")
        expected, _ = scales(module)
        if a_shape[0] != expected:
            raise refuse(
                f"has rank {a_shape[0]} but the config (r/rank_pattern) says {expected}; fix rank_pattern in {CONFIG_NAME}"
            )
        width = b_shape[0]  # output features (a magnitude or a lora_B bias on an embedding is refused above)
        for extra, what in ((plan.magnitudes, "DoRA magnitude"), (plan.lora_biases, "lora_B bias")):
            if module in extra and tuple(header[extra[module]].shape) != (width,):
                raise ShapeMismatchError(
                    f"{folder.name}: module {name} has a {what} of shape {list(header[extra[module]].shape)}, expected "
                    f"[{width}] (one per output feature)",
                    source=str(folder),
                    module=module[:NAME_SHOWN],
                )


def _load_pickle(folder: Path, scales: ScaleRule, config: dict, allow_pickle: bool):
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
    plan = _plan_keys(infos, folder, config)
    _check_shapes(scales, plan, infos, folder)
    return state, plan

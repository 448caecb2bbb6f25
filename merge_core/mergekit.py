"""mergekit 0.1.5 configuration files in, our job spec out: ``loramerge merge config.yml`` and the API's
``mergekit`` field take the YAML that ``mergekit-yaml`` takes, for the methods both tools share.

``models[].model`` names a LoRA as mergekit does (``base+lora``) or as a PEFT folder (ours); an entry
that is the base model itself counts only in ``linear``'s weight sum, as in mergekit. Each method is
translated to ours with mergekit's conventions (docs/METHOD.md §8), so the result is the merged model
mergekit writes from the same file, within float tolerance: computed in float64 (mergekit computes in
float32 on ``merged - base``), TIES-family trims per tensor with mergekit's count, DARE's masks are
drawn by our seeded generator (mergekit's are unseeded draws: equal only in distribution).

The key ``loramerge: {output: {...}}`` (unknown to mergekit) changes our output options, e.g.
``{kind: adapter, rank: 16}`` for a LoRA adapter instead of a merged model (exact where the method is
factored: linear, task_arithmetic).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from merge_core.errors import InvalidParamsError, InvalidSpecError, UnknownMethodError

MAX_YAML_BYTES = 64 * 1024

SHARED_METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties")
# mergekit's own methods we do not share: named in the error rather than called unknown.
OTHER_MERGEKIT_METHODS = (
    "slerp",
    "nuslerp",
    "multislerp",
    "karcher",
    "model_stock",
    "della",
    "della_linear",
    "sce",
    "nearswap",
    "arcee_fusion",
    "passthrough",
    "ram",
    "ramplus_tl",
)
TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "loramerge"}
MERGEKIT_ONLY_KEYS = {"slices", "modules", "tokenizer_source", "tokenizer", "chat_template"}
MODEL_KEYS = {"model", "parameters"}
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}

# mergekit's parameters per method: (shared, per model), with defaults; 'weight' has none (required).
_GTA_SHARED = {"int8_mask": False, "lambda": 1.0}
_DEFAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "linear": ({"normalize": True}, {"weight": None}),
    "task_arithmetic": ({**_GTA_SHARED, "normalize": False, "rescale": False}, {"weight": None, "density": 1.0}),
    "ties": ({**_GTA_SHARED, "normalize": True, "rescale": False}, {"weight": None, "density": 1.0}),
    "dare_linear": ({**_GTA_SHARED, "normalize": False, "rescale": True}, {"weight": None, "density": 1.0}),
    "dare_ties": ({**_GTA_SHARED, "normalize": False, "rescale": True}, {"weight": None, "density": 1.0}),
    "breadcrumbs": ({**_GTA_SHARED, "normalize": False, "rescale": False}, {"weight": None, "density": 1.0, "gamma": 0.01}),
    "breadcrumbs_ties": (
        {**_GTA_SHARED, "normalize": False, "rescale": False},
        {"weight": None, "density": 1.0, "gamma": 0.01},
    ),
}


def parse_mergekit_yaml(text: str | bytes) -> dict[str, Any]:
    """The YAML text as a dict, read safely: bounded size, no aliases, no tags beyond YAML's own.

    Raises:
        InvalidSpecError: too large, not YAML, anchors/aliases, or not a mapping.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_YAML_BYTES:
            raise InvalidSpecError(f"mergekit configuration: {len(text)} bytes, at most {MAX_YAML_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSpecError("mergekit configuration: not UTF-8 text") from None
    if len(text.encode()) > MAX_YAML_BYTES:
        raise InvalidSpecError(f"mergekit configuration: more than {MAX_YAML_BYTES} bytes")
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                raise InvalidSpecError("mergekit configuration: YAML anchors and aliases are not accepted")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise InvalidSpecError(f"mergekit configuration is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise InvalidSpecError("mergekit configuration: expected a mapping with merge_method, base_model and models")
    return data


def mergekit_to_spec(config: dict[str, Any] | str | bytes, *, check_local: bool = False) -> dict[str, Any]:
    """Translate a mergekit configuration into our raw job spec (a dict for ``parse_spec``, or for the
    service's request, which may add ``output.destination``).

    Args:
        config: the parsed YAML, or its text.
        check_local: sources are local folders (the CLI): refuse a folder that is a full model, not a LoRA.

    Raises:
        UnknownMethodError: a merge_method we do not share with mergekit (named).
        InvalidSpecError: unknown or unsupported keys (named), bad model references.
        InvalidParamsError: unknown parameters for the method, missing weights, unsupported values.
    """
    if not isinstance(config, dict):
        config = parse_mergekit_yaml(config)
    unknown = sorted(set(config) - TOP_KEYS - MERGEKIT_ONLY_KEYS, key=str)
    if unknown:
        raise InvalidSpecError(
            f"mergekit configuration: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(TOP_KEYS))}",
            keys=[str(k) for k in unknown],
        )
    unsupported = sorted(set(config) & MERGEKIT_ONLY_KEYS)
    if unsupported:
        raise InvalidSpecError(
            f"mergekit configuration: {', '.join(unsupported)} not supported (loramerge merges LoRA adapters of one base "
            "model: merge_method, base_model, models, parameters, dtype, out_dtype)",
            keys=unsupported,
        )
    method = config.get("merge_method")
    if method not in SHARED_METHODS:
        other = " (a mergekit method loramerge does not offer)" if method in OTHER_MERGEKIT_METHODS else ""
        raise UnknownMethodError(
            f"mergekit merge_method {method!r}{other}; loramerge takes: {', '.join(SHARED_METHODS)}", method=str(method)
        )
    shared_defaults, model_defaults = _DEFAULTS[method]
    shared = _params(config.get("parameters"), "parameters", set(shared_defaults) | set(model_defaults), method)
    base = _reference(config.get("base_model"), "base_model") if config.get("base_model") is not None else None
    models = config.get("models")
    if not isinstance(models, list) or not models:
        raise InvalidSpecError("mergekit configuration: models must be a non-empty list")
    adapters, base_weight, listed_base = [], 0.0, False
    per_model: list[dict[str, Any]] = []
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise InvalidSpecError(f"{where}: expected a mapping with 'model'")
        extra = sorted(set(entry) - MODEL_KEYS, key=str)
        if extra:
            raise InvalidSpecError(f"{where}: unknown key(s) {', '.join(map(str, extra))}", keys=[str(k) for k in extra])
        own = _params(entry.get("parameters"), f"{where}.parameters", set(model_defaults), method)
        values = {**model_defaults, **{k: v for k, v in shared.items() if k in model_defaults}, **own}
        model_base, lora = _split_model(entry["model"], where)
        if base is None and lora is not None:
            base = model_base
        if lora is None and model_base == base:  # the base model itself
            listed_base = True
            base_weight += _number(values["weight"], f"{where}.parameters.weight", method, required=method == "linear")
            continue
        if lora is None:  # a PEFT folder (ours): its base is base_model
            lora = model_base
        elif model_base != base:
            raise InvalidSpecError(
                f"{where}: LoRA on {model_base[0]!r}, but base_model is {base[0] if base else None!r}; all adapters must share "
                "the base model",
                model=str(entry["model"])[:200],
            )
        if check_local:
            _check_peft_folder(lora[0], where)
        if values["weight"] is None:
            raise InvalidParamsError(f"{where}: parameters.weight is required by mergekit's {method}", method=method)
        adapters.append({"source": lora[0], "revision": lora[1], "weight": _number(values["weight"], f"{where}.weight", method)})
        per_model.append(values)
    if base is None:
        raise InvalidSpecError("mergekit configuration: base_model is required (the model the LoRAs were trained on)")
    if method == "linear" and config.get("base_model") is not None and not listed_base:
        # mergekit's linear merges base_model as one more input, weighted by the shared parameters' weight
        base_weight += _number(shared.get("weight"), "parameters.weight (of base_model, an input of linear)", method)
    if not adapters:
        raise InvalidSpecError("mergekit configuration: no LoRA among models (name them base+lora or as PEFT folders)")
    options = {k: shared.get(k, v) for k, v in shared_defaults.items()}
    method_name, params = _translate(method, options, per_model, [a["weight"] for a in adapters], base_weight)
    dtype = config.get("out_dtype") or config.get("dtype") or "float32"
    dtype = str(dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise InvalidSpecError(
            f"mergekit configuration: dtype {dtype!r} not supported for output; use one of {', '.join(DTYPES)}", dtype=dtype
        )
    output: dict[str, Any] = {"kind": "merged_model", "base_model": base[0], "dtype": DTYPES[dtype]}
    if base[1]:
        output["base_model_revision"] = base[1]
    ours = config.get("loramerge") or {}
    if not isinstance(ours, dict) or set(ours) - {"output"} or not isinstance(ours.get("output", {}), dict):
        raise InvalidSpecError("loramerge: expected {output: {kind: adapter, rank: ..., ...}}")
    output.update(ours.get("output", {}))
    return {"method": method_name, "adapters": adapters, "params": params, "output": output}


def _translate(method, options, per_model, weights, base_weight) -> tuple[str, dict[str, Any]]:
    lam = _number(options.get("lambda", 1.0), "parameters.lambda", method)
    normalize = _flag(options["normalize"], "normalize", method)
    weight_sum = sum(weights)
    if method == "linear":  # Σ w_i W_i over every model, base included: W0 (Σw) + Σ w_i ΔW_i
        total = weight_sum + base_weight
        if normalize:
            if total == 0:
                raise InvalidParamsError("linear: the weights sum to 0, so normalize divides by zero", method=method)
            return "task_arithmetic", {"scaling": 1.0 / total}
        if not math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-9):
            raise InvalidParamsError(
                f"linear with normalize: false scales the base model by the weights' sum ({total:g}); loramerge merges "
                "updates onto the base unscaled: use normalize: true, weights that sum to 1, or task_arithmetic",
                method=method,
            )
        return "task_arithmetic", {"scaling": 1.0}  # always a number: mergekit's λ, never our default
    rescale = _flag(options["rescale"], "rescale", method)
    density = _same(per_model, "density", method)
    if density <= 0:
        raise InvalidParamsError(f"{method}: density must be above 0 (got {density:g})", method=method)
    divisor = 1.0 if abs(weight_sum) < 1e-8 else weight_sum  # mergekit's divisor without sign consensus
    if method == "task_arithmetic":
        return "task_arithmetic", {"scaling": lam / divisor if normalize else lam}
    if rescale and not method.startswith("dare"):
        raise InvalidParamsError(
            f"{method}: rescale: true is not supported (mergekit's L1 rescale of trimmed updates)", method=method
        )
    dense = {"compute_dtype": "float64"}
    consensus = {"normalize": normalize, "divisor": "weight_sum", "zero_vote": "positive"}
    if method == "ties":
        return "ties", {
            **dense,
            **consensus,
            "scaling": lam,
            "density": min(density, 1.0),
            "keep_count": "floor",
            "scope": "module",
        }
    if method.startswith("dare"):
        dare = {**dense, "drop_rate": max(0.0, 1.0 - density), "rescale": "l1" if rescale else "none"}
        if method == "dare_ties":
            return "dare_ties", {**dare, **consensus, "scaling": lam}
        return "dare_linear", {**dare, "scaling": lam / divisor if normalize else lam}
    gamma = _same(per_model, "gamma", method)
    if density >= 1:  # mergekit keeps the whole update then (gamma unused)
        crumbs = {"beta": 1.0, "gamma": 0.0}
    elif density + gamma > 1:
        raise InvalidParamsError(f"{method}: density + gamma must not exceed 1 (got {density:g} + {gamma:g})", method=method)
    else:
        crumbs = {"beta": density, "gamma": gamma}
    crumbs.update(dense, scope="tensor", keep_count="floor")
    if method == "breadcrumbs_ties":
        return "breadcrumbs_ties", {**crumbs, **consensus, "scaling": lam}
    return "breadcrumbs", {**crumbs, "scaling": lam / divisor if normalize else lam}


def _params(raw: Any, where: str, allowed: set[str], method: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidSpecError(f"{where}: expected a mapping of parameters")
    unknown = sorted(set(raw) - allowed, key=str)
    if unknown:
        hint = " (epsilon is della's)" if "epsilon" in unknown else ""
        raise InvalidParamsError(
            f"{where}: unknown parameter(s) for {method}: {', '.join(map(str, unknown))}{hint}; {method} takes "
            f"{', '.join(sorted(allowed))}",
            method=method,
            errors=[str(k) for k in unknown],
        )
    for key, value in raw.items():
        if isinstance(value, (list, dict)):
            raise InvalidParamsError(
                f"{where}.{key}: per-layer gradients and filtered values are not supported; give one number", method=method
            )
    return dict(raw)


def _number(value: Any, where: str, method: str, *, required: bool = True) -> float:
    if value is None and not required:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidParamsError(f"{where}: expected a finite number, got {value!r}", method=method)
    return float(value)


def _flag(value: Any, name: str, method: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParamsError(f"parameters.{name}: expected true or false, got {value!r}", method=method)
    return value


def _same(per_model: list[dict[str, Any]], key: str, method: str) -> float:
    values = {_number(v[key], f"parameters.{key}", method) for v in per_model}
    if len(values) > 1:
        raise InvalidParamsError(
            f"{method}: {key} differs across models ({sorted(values)}); loramerge takes one {key} for all adapters", method=method
        )
    return values.pop()


def _reference(value: Any, where: str) -> tuple[str, str | None]:
    base, lora = _split_model(value, where)
    if lora is not None:
        raise InvalidSpecError(f"{where}: a base model cannot carry a LoRA ({value!r})")
    return base


def _split_model(value: Any, where: str) -> tuple[tuple[str, str | None], tuple[str, str | None] | None]:
    """mergekit's ``path[@revision][+lora[@revision]]``."""
    if not isinstance(value, str) or not value:
        raise InvalidSpecError(f"{where}: expected a model reference string (path, org/name, base+lora)")
    chunks = value.split("+")
    if len(chunks) > 2:
        raise InvalidSpecError(f"{where}: can't parse {value[:200]!r} (one '+' between base and LoRA)")
    parsed = []
    for chunk in chunks:
        if chunk.count("@") > 1 or not chunk.split("@")[0]:
            raise InvalidSpecError(f"{where}: invalid model path {chunk[:200]!r}")
        path, _, revision = chunk.partition("@")
        parsed.append((path, revision or None))
    return parsed[0], (parsed[1] if len(parsed) == 2 else None)


def _check_peft_folder(source: str, where: str) -> None:
    folder = Path(source).expanduser()
    if folder.is_dir() and not (folder / "adapter_config.json").is_file() and (folder / "config.json").is_file():
        raise InvalidSpecError(
            f"{where}: {source!r} is a full model, not a LoRA adapter; loramerge merges LoRA adapters (name one as base+lora "
            "or as a PEFT folder)",
            source=source,
        )

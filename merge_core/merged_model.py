"""``output.kind = "merged_model"``: write ``W0 + ΔW`` for a base model folder, sharded, one tensor at a time."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from merge_core.base_model import INDEX_NAME, BaseWeights
from merge_core.engine import MergedAdapter
from merge_core.errors import BaseModelError, BiasNotMergeableError, ShapeMismatchError
from merge_core.output import DTYPES
from merge_core.safetensors_writer import ST_TO_TORCH, write_streaming

DEFAULT_SHARD_BYTES = 5 * 1024**3
CONFIG_NAME = "config.json"


def write_merged_model(
    merged: MergedAdapter,
    base_folder: Path,
    out_folder: Path,
    *,
    dtype: str = "float32",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Callable[[str, int, int], None] | None = None,
    full_weights: dict[str, torch.Tensor] | None = None,
    bias_updates: dict[str, torch.Tensor] | None = None,
    leave_out: set[str] | frozenset[str] = frozenset(),
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
        full_weights: ``parameter name -> tensor`` replacing the base's (kept heads, resized embeddings),
            or added where the base has none (a classification head on a causal LM's body).
        bias_updates: ``parameter name -> Δb`` added to the base's bias.
        leave_out: base tensors not to write (heads that each adapter keeps beside the model instead).

    ``config.json`` follows the tensors written: ``vocab_size`` when the embeddings changed size, the
    label count (``id2label``) when a classification head did, ``tie_word_embeddings: false`` when the
    input embeddings or ``lm_head`` of a tied model changed (``_untie``).

    Returns:
        The names of the files written.

    Raises:
        BaseModelError: missing folder or weights, a merged module without a base weight, an unwritable dtype.
        ShapeMismatchError: a base weight whose shape is not the update's.
        CorruptSafetensorsError: a base shard's header does not hold.
    """
    base = BaseWeights(base_folder)
    replaced, biases = dict(full_weights or {}), bias_updates or {}
    targets = {f"{name}.weight": name for name in merged.names()}
    untied = _untie(base, replaced, targets)
    names = sorted((set(base.files) - set(leave_out)) | set(replaced))
    missing = sorted(set(targets) - set(names))
    if missing:
        raise BaseModelError(f"the base model has no tensor for {len(missing)} merged updates, e.g. {missing[0]!r}")
    biasless = sorted(set(biases) - set(names))
    if biasless:
        raise BiasNotMergeableError(
            f"{len(biasless)} layers with a trained lora_B bias have no bias in the base model, e.g. {biasless[0]!r}, so a "
            "merged model has nowhere to put it (PEFT refuses this merge too); write an adapter instead (output.kind: adapter)"
        )
    out_dtype = DTYPES[dtype]
    plan = []
    for name in names:
        shape = tuple(replaced[name].shape) if name in replaced else base.shape(name)
        update = merged.weight_delta(targets[name]).shape if name in targets else biases[name].shape if name in biases else None
        if update is not None and tuple(update) != shape:
            raise ShapeMismatchError(f"base weight {name!r} is {list(shape)}, the merged update is {list(update)}")
        if name in replaced:
            source_dtype = replaced[name].dtype
        else:
            source_dtype = ST_TO_TORCH.get(base.infos[name].dtype)
            if source_dtype is None:
                raise BaseModelError(f"base weight {name!r} has dtype {base.infos[name].dtype}, which merged_model cannot write")
        plan.append((name, out_dtype if source_dtype.is_floating_point else source_dtype, shape))
    shards = _shard(plan, shard_bytes)
    out_folder.mkdir(parents=True, exist_ok=True)
    written, done = [], 0

    def produce(name: str) -> torch.Tensor:
        nonlocal done
        tensor = replaced[name] if name in replaced else base.get(name)
        if name in targets or name in biases:
            delta = merged.weight_delta(targets[name]) if name in targets else biases[name]
            tensor = (tensor.double() + delta).to(out_dtype)
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
    if (out_folder / CONFIG_NAME).is_file() and (replaced or untied):
        config = json.loads((out_folder / CONFIG_NAME).read_text())
        if fit_config(config, base, {name: tuple(t.shape) for name, t in replaced.items()}) or untied:
            config["tie_word_embeddings"] = False if untied else config.get("tie_word_embeddings")
            (out_folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return written


INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight", "shared.weight")
LM_HEAD = "lm_head.weight"


def _untie(base: BaseWeights, replaced: dict[str, torch.Tensor], targets: dict[str, str]) -> bool:
    """A model whose ``lm_head`` is tied to its input embeddings (``tie_word_embeddings``, HF's default) and
    an update to either one: PEFT's forward changes only the one it targets, so the merged model unties
    them, writing ``lm_head.weight`` separately (added to ``replaced`` from the embeddings when the base
    stores only those). True if it did."""
    try:
        config = json.loads((base.folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict) or not config.get("tie_word_embeddings", True):
        return False
    embedding = next((n for n in sorted(base.files) if n.endswith(INPUT_EMBEDDINGS)), None)
    touched = {LM_HEAD, embedding} & (set(targets) | set(replaced))
    if embedding is None or not touched:
        return False
    if LM_HEAD not in base and LM_HEAD not in replaced:
        replaced[LM_HEAD] = replaced[embedding] if embedding in replaced else base.get(embedding)
    return True


HEAD_NAMES = ("score.weight", "classifier.weight", "classifier.out_proj.weight")  # SEQ_CLS heads of HF models


def fit_config(config: dict, base: BaseWeights, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Make ``config`` describe tensors that replaced the base's: resized embeddings (``vocab_size``) and
    classification heads with another label count (``id2label``/``label2id``). True if it changed."""
    changed = False
    labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 2)
    for name, shape in sorted(shapes.items()):
        old = base.shape(name) if name in base else None
        if len(shape) != 2 or old == shape:
            continue
        if old is not None and old[0] == config.get("vocab_size") and old[1:] == shape[1:]:
            config["vocab_size"], changed = shape[0], True
        elif name.endswith(HEAD_NAMES) and shape[0] != labels:
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(shape[0])}
            config["label2id"] = {f"LABEL_{i}": i for i in range(shape[0])}
            config.pop("num_labels", None)
            labels, changed = shape[0], True
    return changed


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

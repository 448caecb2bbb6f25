"""One merge end to end: validate the spec, load the adapter folders, merge, write atomically.

merge_core reads local folders only. The CLI passes none and the spec's sources are read as paths;
the service's worker fetches every source into staging first (Hub, object store, confined local
copies) and passes the folders with their pinned revisions. Output appears at ``out_dir`` all at once
or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from merge_core.adapters import LoraAdapter, load_adapter
from merge_core.base_model import BaseWeights
from merge_core.engine import (
    BATCH_ELEMENTS,
    MergedAdapter,
    OomPolicy,
    Progress,
    check_compatible,
    merge_adapters,
    resolve_device,
)
from merge_core.errors import BaseModelError, InvalidSpecError, MergeError, RankRequiredError, SourceNotFoundError
from merge_core.full_weights import FullWeightsPlan, bias_updates, merge_bias_updates, plan_full_weights
from merge_core.merged_model import write_merged_model
from merge_core.model_card import render_model_card
from merge_core.output import DTYPES, write_adapter
from merge_core.registry import ResolvedSpec, validate_spec
from merge_core.safetensors_writer import save_tensors
from merge_core.spec import AdapterRef, MergeSpec

DIAGNOSTICS_NAME = "merge_diagnostics.json"
SPEC_NAME = "merge_spec.json"
PER_ADAPTER_DIR = "per_adapter"  # output.full_weights = per_adapter: one folder per adapter that has its own
PER_ADAPTER_WEIGHTS_NAME = "full_weights.safetensors"  # ... for merged_model output, keyed by parameter name


@dataclass
class AdapterFolder:
    """An adapter on local disk; ``revision`` is the pinned one (commit sha, ETag, sha256) if known."""

    path: Path
    revision: str | None = None


def local_folder(ref: AdapterRef) -> AdapterFolder:
    """The CLI's reading of a source: a folder path."""
    path = Path(ref.source).expanduser()
    if not path.is_dir():
        hint = " (Hub IDs and s3:// URIs are fetched by the service, not the CLI)" if not path.is_absolute() else ""
        raise SourceNotFoundError(f"adapter folder {ref.source!r} does not exist{hint}", source=ref.source)
    return AdapterFolder(path=path, revision=ref.revision)


@dataclass
class MergeOutcome:
    out_dir: Path
    files: list[str]
    summary: dict[str, float | str]
    sources: list[dict]
    elapsed_s: float
    merged: MergedAdapter = field(repr=False)
    full_weights: FullWeightsPlan = field(default_factory=FullWeightsPlan, repr=False)
    bias_updates: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def run_merge(
    spec: MergeSpec | ResolvedSpec,
    out_dir: str | Path,
    *,
    folders: Sequence[AdapterFolder] | None = None,
    allow_pickle: bool = False,
    max_adapter_bytes: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    base_model_dir: Path | None = None,
    batch_elements: int = BATCH_ELEMENTS,
    on_oom: OomPolicy = "cpu",
) -> MergeOutcome:
    """Merge ``spec.adapters`` into ``out_dir`` (created all at once, or not at all).

    Args:
        spec: the job spec, or one that ``validate_spec`` already checked (it is not checked again).
        folders: one local folder per ``spec.adapters`` entry, in order (fetched and pinned by the
            caller); None reads each source as a folder path.
        base_model_dir: where to read ``output.base_model`` from, when the caller has staged or
            checked it (the service); the spec's own name still goes into the provenance.
        progress, should_cancel: called at every batch and inside long kernels; a True from
            ``should_cancel`` raises MergeCancelledError.
        batch_elements: largest batch of same-shaped modules, in factor elements (memory per batch).
        on_oom: what a module does that does not fit in the device's memory alone (``merge_adapters``).

    Raises:
        MergeError: any of merge_core.errors (bad spec, adapter, source, or a diverging merge).
    """
    started = time.monotonic()
    checked = spec if isinstance(spec, ResolvedSpec) else validate_spec(spec)
    spec, method, params = checked.spec, checked.method, checked.params
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidSpecError(f"output {str(out_dir)!r} already exists and is not empty", out_dir=str(out_dir))
    if folders is not None and len(folders) != len(spec.adapters):
        raise ValueError(f"{len(folders)} folders for {len(spec.adapters)} adapters")
    adapters, sources = [], []
    for i, ref in enumerate(spec.adapters):
        resolved = folders[i] if folders is not None else local_folder(ref)
        try:
            adapters.append(
                load_adapter(resolved.path, allow_pickle=allow_pickle, max_bytes=max_adapter_bytes, revision=resolved.revision)
            )
        except MergeError as exc:  # say which of the job's adapters it is: the folder may be a staging copy
            exc.message = f"adapters[{i}] ({ref.source}): {exc.message}"
            exc.args = (exc.message,)
            exc.details.setdefault("adapter", i)
            raise
        sources.append({"source": ref.source, "revision": resolved.revision, "weight": ref.weight})
        if progress is not None:
            progress("load", i + 1, len(spec.adapters))
    base = _base_weights(spec, base_model_dir)
    check_compatible(adapters, spec.base_model_check)
    _check_dora_output(adapters, spec)
    weights = [ref.weight for ref in spec.adapters]
    full = plan_full_weights(adapters, spec.output.full_weights)
    bias_parts = bias_updates(adapters, weights, method, base)  # refused before the merge, added up after it
    merged = merge_adapters(
        adapters,
        method,
        params,
        weights=weights,
        rank=spec.output.rank,
        device=device,
        progress=progress,
        should_cancel=should_cancel,
        batch_elements=batch_elements,
        base=base,
        base_model_check=spec.base_model_check,
        output_kind=spec.output.kind,
        on_oom=on_oom,
        spill_dir=out_dir.parent / f".{out_dir.name}.spill-{uuid.uuid4().hex[:8]}",
    )
    biases = merge_bias_updates(bias_parts, merged)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        files = _write(spec, merged, adapters, full, biases, base, tmp, progress, resolve_device(device))
        card = render_model_card(
            spec,
            merged,
            sources,
            elapsed_s=time.monotonic() - started,
            full_weights=full.decisions,
            biases=sorted(biases),
            dora_modules=sum(m.dora for a in adapters for m in a.modules.values()),
        )
        (tmp / "README.md").write_text(card)
        diagnostics = {"summary": merged.summary(), "modules": merged.diagnostics, "full_weights": full.decisions}
        (tmp / DIAGNOSTICS_NAME).write_text(json.dumps(diagnostics, indent=1))
        provenance = {"spec": spec.model_dump(mode="json"), "sources": sources, "torch": torch.__version__}
        (tmp / SPEC_NAME).write_text(json.dumps(provenance, indent=2))
        files = sorted(set(files) | {"README.md", DIAGNOSTICS_NAME, SPEC_NAME})
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); os.replace needs the name free
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return MergeOutcome(out_dir, files, merged.summary(), sources, time.monotonic() - started, merged, full, biases)


def _base_weights(spec: MergeSpec, base_model_dir: Path | None) -> BaseWeights | None:
    """The base model's weights: the folder the caller staged (the service), or ``output.base_model`` read as
    a folder (the CLI, the Python API), which has no revision to pin."""
    if base_model_dir is not None:
        return BaseWeights(base_model_dir)
    if spec.output.base_model is None:
        return None
    if spec.output.base_model_revision is not None:
        raise InvalidSpecError(
            "output.base_model_revision pins a Hub base model, which the service fetches; here output.base_model is "
            "read as a local folder, which has no revision: drop output.base_model_revision",
            field="output.base_model_revision",
        )
    folder = Path(spec.output.base_model).expanduser()
    if not folder.is_dir():
        hint = " (Hub IDs are fetched by the service, not the CLI)" if not folder.is_absolute() else ""
        raise BaseModelError(
            f"base model folder {spec.output.base_model!r} does not exist{hint}", base_model=spec.output.base_model
        )
    return BaseWeights(folder)


def _check_dora_output(adapters: Sequence[LoraAdapter], spec: MergeSpec) -> None:
    dora = sum(m.dora for a in adapters for m in a.modules.values())
    if dora and spec.output.kind == "adapter" and spec.output.rank is None:
        raise RankRequiredError(
            f"{dora} DoRA modules give full-rank updates (they rescale the base weight's rows): write a merged_model, or "
            "set output.rank to truncate them to a LoRA (the error is reported per module as compression_error)"
        )


def _write(
    spec: MergeSpec,
    merged: MergedAdapter,
    adapters: Sequence[LoraAdapter],
    full: FullWeightsPlan,
    biases: dict[str, torch.Tensor],
    base: BaseWeights | None,
    folder: Path,
    progress: Progress | None,
    device: torch.device,
) -> list[str]:
    if spec.output.kind == "merged_model":
        files = write_merged_model(
            merged,
            base.folder,
            folder,
            dtype=spec.output.dtype,
            progress=progress,
            full_weights={name: w.tensor for name, w in full.shared.items()},
            bias_updates=biases,
            leave_out={name for own in full.per_adapter.values() for name in own},
            device=device,
        )
        for i, own in full.per_adapter.items():  # each adapter's own tensors, plus the merged update where one applies
            tensors = {name: _with_update(merged, name, w.tensor).to(DTYPES[spec.output.dtype]) for name, w in own.items()}
            (folder / PER_ADAPTER_DIR / str(i)).mkdir(parents=True)
            save_tensors(tensors, folder / PER_ADAPTER_DIR / str(i) / PER_ADAPTER_WEIGHTS_NAME)
            files.append(f"{PER_ADAPTER_DIR}/{i}/{PER_ADAPTER_WEIGHTS_NAME}")
        return files
    common = dict(dtype=spec.output.dtype, task_type=shared_task_type(adapters), bias_updates=biases, base=base)
    files = write_adapter(
        merged, folder, full_weights=full.shared, modules_to_save=_saved_modules(adapters, full.shared), **common
    )
    for i, own in full.per_adapter.items():
        weights = {**full.shared, **own}
        into = folder / PER_ADAPTER_DIR / str(i)
        written = write_adapter(
            merged, into, full_weights=weights, modules_to_save=_saved_modules([adapters[i]], weights), **common
        )
        files += [f"{PER_ADAPTER_DIR}/{i}/{name}" for name in written]
    return files


def shared_task_type(adapters: Sequence[LoraAdapter]) -> str | None:
    """The PEFT ``task_type`` the merged adapter declares: the inputs' when they all declare the same one, else
    none. ``scaling: "auto"`` reads it (``merge_core.scaling.auto_table``), so a mix must not pass for one kind."""
    kinds = {json.dumps(a.config.get("task_type")) for a in adapters}
    return adapters[0].config.get("task_type") if len(kinds) == 1 else None


def _with_update(merged: MergedAdapter, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A full weight as the merged model would hold it: with the merged LoRA update of its layer added."""
    module = name.removesuffix(".weight")
    if name.endswith(".weight") and module in merged.names():
        return (tensor.double() + merged.weight_delta(module)).contiguous()
    return tensor.contiguous()


def _saved_modules(adapters: Sequence[LoraAdapter], weights: dict) -> list[str] | None:
    """The config's ``modules_to_save`` for an output that ships these full weights (None if none is a module copy)."""
    if not any(w.kind == "modules_to_save" for w in weights.values()):
        return None
    return sorted({m for a in adapters for m in a.config.get("modules_to_save") or []})

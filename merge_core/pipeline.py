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

from merge_core.adapters import load_adapter
from merge_core.engine import BATCH_ELEMENTS, MergedAdapter, Progress, merge_adapters
from merge_core.errors import InvalidSpecError, SourceNotFoundError
from merge_core.merged_model import write_merged_model
from merge_core.model_card import render_model_card
from merge_core.output import write_adapter
from merge_core.registry import ResolvedSpec, validate_spec
from merge_core.spec import AdapterRef, MergeSpec

DIAGNOSTICS_NAME = "merge_diagnostics.json"
SPEC_NAME = "merge_spec.json"


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
    summary: dict[str, float]
    sources: list[dict]
    elapsed_s: float
    merged: MergedAdapter = field(repr=False)


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
) -> MergeOutcome:
    """Merge ``spec.adapters`` into ``out_dir`` (created all at once, or not at all).

    Args:
        spec: the job spec, or one that ``validate_spec`` already checked (it is not checked again).
        folders: one local folder per ``spec.adapters`` entry, in order (fetched and pinned by the
            caller); None reads each source as a folder path.
        base_model_dir: where to read ``output.base_model`` from, when the caller has staged or
            checked it (the service); the spec's own path still goes into the provenance.
        progress, should_cancel: called at every batch and inside long kernels; a True from
            ``should_cancel`` raises MergeCancelledError.
        batch_elements: largest batch of same-shaped modules, in factor elements (memory per batch).

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
        adapters.append(
            load_adapter(resolved.path, allow_pickle=allow_pickle, max_bytes=max_adapter_bytes, revision=resolved.revision)
        )
        sources.append({"source": ref.source, "revision": resolved.revision, "weight": ref.weight})
        if progress is not None:
            progress("load", i + 1, len(spec.adapters))
    merged = merge_adapters(
        adapters,
        method,
        params,
        weights=[ref.weight for ref in spec.adapters],
        rank=spec.output.rank,
        device=device,
        progress=progress,
        should_cancel=should_cancel,
        batch_elements=batch_elements,
    )
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        files = _write(spec, merged, adapters[0].config.get("task_type"), tmp, progress, base_model_dir)
        card = render_model_card(spec, merged, sources, elapsed_s=time.monotonic() - started)
        (tmp / "README.md").write_text(card)
        (tmp / DIAGNOSTICS_NAME).write_text(json.dumps({"summary": merged.summary(), "modules": merged.diagnostics}, indent=1))
        provenance = {"spec": spec.model_dump(mode="json"), "sources": sources, "torch": torch.__version__}
        (tmp / SPEC_NAME).write_text(json.dumps(provenance, indent=2))
        files = sorted(set(files) | {"README.md", DIAGNOSTICS_NAME, SPEC_NAME})
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); os.replace needs the name free
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return MergeOutcome(out_dir, files, merged.summary(), sources, time.monotonic() - started, merged)


def _write(spec: MergeSpec, merged: MergedAdapter, task_type, folder: Path, progress, base_model_dir: Path | None) -> list[str]:
    if spec.output.kind == "merged_model":
        base = base_model_dir or Path(spec.output.base_model)
        return write_merged_model(merged, base, folder, dtype=spec.output.dtype, progress=progress)
    return write_adapter(merged, folder, dtype=spec.output.dtype, task_type=task_type)

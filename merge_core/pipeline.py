"""One job end to end: validate the spec, resolve and load sources, merge, write, publish atomically.

The CLI calls this directly; the service's worker calls it with its own source resolver (Hub, S3)
and cancel check. Output appears at ``out_dir`` all at once or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from merge_core.adapters import load_adapter
from merge_core.engine import MergedAdapter, Progress, merge_adapters
from merge_core.errors import InvalidSpecError, RankRequiredError, SourceNotFoundError
from merge_core.merged_model import write_merged_model
from merge_core.model_card import render_model_card
from merge_core.output import write_adapter
from merge_core.registry import get_method
from merge_core.spec import AdapterRef, MergeSpec

DIAGNOSTICS_NAME = "merge_diagnostics.json"
SPEC_NAME = "merge_spec.json"


@dataclass
class ResolvedSource:
    """A source fetched to a local folder; ``revision`` is the pinned one (a commit sha for the Hub)."""

    path: Path
    revision: str | None = None


Resolver = Callable[[AdapterRef], ResolvedSource]


def resolve_local(ref: AdapterRef) -> ResolvedSource:
    path = Path(ref.source).expanduser()
    if not path.is_dir():
        hint = " (Hub IDs and s3:// URIs are fetched by the service, not the CLI)" if not path.is_absolute() else ""
        raise SourceNotFoundError(f"adapter folder {ref.source!r} does not exist{hint}", source=ref.source)
    return ResolvedSource(path=path, revision=ref.revision)


@dataclass
class MergeOutcome:
    out_dir: Path
    files: list[str]
    summary: dict[str, float]
    sources: list[dict]
    elapsed_s: float
    merged: MergedAdapter = field(repr=False)


def check_spec(spec: MergeSpec) -> None:
    """Checks that need no file: method, parameters, rank policy, duplicate sources."""
    method = get_method(spec.method)
    method.parse_params(spec.params)
    if spec.output.rank is None and not method.factored:
        raise RankRequiredError(f"{method.name} gives a full-rank update: set output.rank", method=method.name)
    seen = set()
    for i, ref in enumerate(spec.adapters):
        key = (ref.source, ref.revision)
        if key in seen:
            raise InvalidSpecError(
                f"adapters[{i}]: {ref.source!r} is listed twice; give it one entry with a larger weight instead",
                source=ref.source,
            )
        seen.add(key)


def run_merge(
    spec: MergeSpec,
    out_dir: str | Path,
    *,
    resolve: Resolver = resolve_local,
    allow_pickle: bool = False,
    max_adapter_bytes: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    base_model_dir: Path | None = None,
) -> MergeOutcome:
    """Merge ``spec.adapters`` into ``out_dir`` (created all at once, or not at all).

    Args:
        resolve: turns each adapter reference into a local folder (the CLI's default reads paths).
        base_model_dir: where to read ``output.base_model`` from, when the caller has staged or
            checked it (the service); the spec's own path still goes into the provenance.
        progress, should_cancel: called at every batch and inside long kernels; a True from
            ``should_cancel`` raises MergeCancelledError.

    Raises:
        MergeError: any of merge_core.errors (bad spec, adapter, source, or a diverging merge).
    """
    started = time.monotonic()
    check_spec(spec)
    method = get_method(spec.method)
    params = method.parse_params(spec.params)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidSpecError(f"output {str(out_dir)!r} already exists and is not empty", out_dir=str(out_dir))
    adapters, sources = [], []
    for i, ref in enumerate(spec.adapters):
        resolved = resolve(ref)
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

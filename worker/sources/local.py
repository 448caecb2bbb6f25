"""Local folders under LORAMERGE_LOCAL_ROOTS, pinned by the sha256 of their weights file."""

from __future__ import annotations

import hashlib
from pathlib import Path

from jobs.sources import confine
from merge_core.errors import SourceNotFoundError
from merge_core.pipeline import ResolvedSource
from worker.sources import ADAPTER_FILES, PICKLE_FILE


def resolve_local(source: str, *, local_roots: list[Path], field: str) -> ResolvedSource:
    folder = confine(source, local_roots, field=field)
    if not folder.is_dir():
        raise SourceNotFoundError(f"{field}: adapter folder {source!r} does not exist", source=source)
    weights = folder / ADAPTER_FILES[1]
    if not weights.is_file():
        weights = folder / PICKLE_FILE
    return ResolvedSource(path=folder, revision=f"sha256:{_sha256(weights)}" if weights.is_file() else None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

"""Where the local result store keeps a job's result, for the worker that writes it and the API that
serves it as a tar (the API knows results by their ``file://`` URI, not by the sink's layout)."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse


def local_result_folder(results_dir: Path, job_id: str) -> Path:
    return results_dir / job_id


def local_folder_of(uri: str, results_dir: Path) -> Path | None:
    """The folder a ``file://`` result URI names, if it lies in ``results_dir`` and is no symlink; None otherwise."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    named = Path(unquote(parsed.path))
    store = Path(results_dir).resolve()
    if named.parent.resolve() != store or named.is_symlink():
        return None  # a link in the store (planted there) would serve or delete another job's result
    return store / named.name


def remove_local_result(uri: str | None, results_dir: Path) -> bool:
    """Delete the local-store folder a result URI names (nothing outside ``results_dir``). True if a
    folder was there; an OSError propagates (result retention removes what is left later)."""
    folder = local_folder_of(uri, results_dir) if uri else None
    if folder is None or not folder.is_dir():
        return False
    shutil.rmtree(folder)
    return True

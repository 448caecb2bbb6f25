"""What a source or destination string names, and whether this server may touch it.

Checked twice: by the API before queueing (a 422 the caller can act on) and by the worker before it
reads anything (the record might have been written by an older API with other roots).

  Hub ID       ``org/name`` (+ ``revision``)      pinned to a commit sha by the worker
  local path   absolute, under LORAMERGE_LOCAL_ROOTS after resolving symlinks and ``..``, never
               inside the data dir; LORAMERGE_LOCAL_SYMLINKS=refuse follows no symlink inside a root
  object store ``s3://bucket/prefix``
Base models (``output.base_model``, ``output.base_model_revision``): a Hub ID (+ revision) or a local
path, under the same rules; no ``s3://`` (``check_base_model``).
Destinations: null or ``local`` (the local store), ``s3://bucket/prefix``, ``hf://org/name``.

Every pattern is matched with ``fullmatch``: ``$`` also matches before a trailing newline.
This module only decides on paths; the worker opens files race-free in ``worker/sources/local.py``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Literal

from jobs.errors import InvalidDestinationError as InvalidDestinationError  # re-exported: defined with the catalog
from jobs.errors import InvalidSourceError as InvalidSourceError
from jobs.errors import LocalPathNotAllowedError as LocalPathNotAllowedError
from merge_core.errors import SourceNotFoundError

SourceKind = Literal["hub", "local", "s3"]
DestinationKind = Literal["local", "s3", "hub"]
SymlinkPolicy = Literal["within_roots", "refuse"]

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"{_NAME}/{_NAME}")
HUB_REVISION = re.compile(r"[A-Za-z0-9._/-]{1,255}")
S3_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[^\x00-\x1f\x7f-\x9f\u2028\u2029]*))?")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: none belongs in a path or key
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_SYMLINK_HOPS = 40


def source_kind(source: str) -> SourceKind:
    if source.startswith("s3://"):
        return "s3"
    if source.startswith("/") or source.startswith("~") or source.startswith("file://"):
        return "local"
    return "hub"


def is_hub_id(name: str) -> bool:
    """``org/name`` as the Hub allows it: no ``..`` or ``--``, no ``.git`` at the end (huggingface_hub's
    own validator refuses those), nothing before or after (no trailing newline)."""
    return HUB_ID.fullmatch(name) is not None and ".." not in name and "--" not in name and not name.endswith(".git")


def check_source(
    source: str,
    revision: str | None,
    *,
    local_roots: list[Path],
    field: str,
    data_dir: Path | None = None,
    symlinks: SymlinkPolicy = "within_roots",
) -> SourceKind:
    kind = source_kind(source)
    if kind == "hub":
        if not is_hub_id(source):
            raise InvalidSourceError(
                f"{field}: {source!r} is not a Hub ID (org/name: letters, digits, '.', '_', '-'; no '..' or '--', no '.git' at the end), "
                "an absolute local path or an s3:// URI (local paths must be absolute)",
                field=field,
            )
        _not_a_relative_path(source, local_roots, field=field)
        check_revision(revision, field=field)
    elif kind == "s3":
        parse_s3(source, field=field)
    else:
        real = confine(source, local_roots, field=field, data_dir=data_dir, symlinks=symlinks)
        if not real.is_dir():
            raise SourceNotFoundError(
                f"{field}: {source!r} is not a folder on this server (it lies under the allowed roots, but "
                f"{'nothing' if not real.exists() else 'a file'} is there)",
                field=field,
                source=source,
            )
    return kind


def _not_a_relative_path(source: str, local_roots: list[Path], *, field: str) -> None:
    """``adapters/a_r4`` has a Hub ID's form; if a folder of that name sits under a root (or under the
    server's current folder, within a root), the caller meant that folder: say so rather than ask the Hub
    for it. Folders outside the roots are never named: a tenant learns nothing of the server's disk."""
    roots = [Path(root).resolve() for root in local_roots]
    for folder in (*roots, Path.cwd()):
        candidate = folder / source
        if candidate.is_dir() and any(candidate.resolve().is_relative_to(root) for root in roots):
            raise InvalidSourceError(
                f"{field}: {source!r} has the form of a Hub ID, but {str(candidate)!r} is a folder on this server; "
                f"local sources must be absolute paths: use {str(candidate.resolve())!r}",
                field=field,
            )


def check_base_model(
    base_model: str,
    revision: str | None,
    *,
    local_roots: list[Path],
    field: str = "output.base_model",
    revision_field: str = "output.base_model_revision",
    data_dir: Path | None = None,
    symlinks: SymlinkPolicy = "within_roots",
) -> SourceKind:
    """``output.base_model`` under the rules of an adapter source: a Hub ID (its revision checked as a
    source's) or a local folder confined to the roots. A revision only goes with a Hub ID, and
    ``s3://`` base models are not fetched (InvalidSourceError naming the field)."""
    kind = source_kind(base_model)
    if kind == "s3":
        raise InvalidSourceError(
            f"{field}: {base_model!r}: a base model is a Hub ID (org/name) or an absolute local path; s3:// is not supported",
            field=field,
        )
    if kind == "local" and revision is not None:
        raise InvalidSourceError(
            f"{revision_field}: only a Hub base model has a revision; {base_model!r} is a local path "
            f"(drop {revision_field} or give a Hub ID)",
            field=revision_field,
        )
    check_source(base_model, None, local_roots=local_roots, field=field, data_dir=data_dir, symlinks=symlinks)
    if kind == "hub":
        check_revision(revision, field=revision_field)
    return kind


def check_revision(revision: str | None, *, field: str) -> None:
    if revision is not None and (HUB_REVISION.fullmatch(revision) is None or ".." in revision):
        raise InvalidSourceError(
            f"{field}: revision {revision!r} is not a branch, tag or commit sha (letters, digits, '.', '_', '-', '/'; no '..')",
            field=field,
        )


def confine(
    source: str,
    local_roots: list[Path],
    *,
    field: str,
    data_dir: Path | None = None,
    symlinks: SymlinkPolicy = "within_roots",
) -> Path:
    """The real path of ``source`` if it lies under a root and outside ``data_dir``.

    Symlinks and ``..`` are resolved first; with ``symlinks="refuse"`` a symlink met inside a root is an
    error (symlinks above the roots, such as ``/data -> /mnt/data``, are still followed). Checks the path
    only: a caller that opens files must open them with ``worker.sources.local`` (race-free)."""
    if not local_roots:
        raise LocalPathNotAllowedError(
            f"{field}: local paths are disabled on this server (LORAMERGE_LOCAL_ROOTS is empty)", field=field
        )
    raw = source.removeprefix("file://")
    if _CONTROL.search(raw):
        raise InvalidSourceError(
            f"{field}: a local path may not contain control characters (NUL, newline); expected an absolute path",
            field=field,
        )
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise InvalidSourceError(f"{field}: {source!r} is not an absolute local path", field=field)
    return confine_path(path, local_roots, field=field, shown=source, data_dir=data_dir, symlinks=symlinks)


def confine_path(
    path: Path,
    local_roots: list[Path],
    *,
    field: str,
    shown: str | None = None,
    data_dir: Path | None = None,
    symlinks: SymlinkPolicy = "within_roots",
) -> Path:
    """``confine`` for an absolute Path (a file inside a confined folder, say). ``shown`` is the name used in messages."""
    shown = str(path) if shown is None else shown
    roots = [Path(root).resolve() for root in local_roots]
    real = real_path(path, roots=roots if symlinks == "refuse" else None, field=field, shown=shown)
    if not any(is_within(real, root) for root in roots):
        raise LocalPathNotAllowedError(f"{field}: {shown!r} is outside the allowed local roots", field=field)
    if data_dir is not None and is_within(real, Path(data_dir).resolve()):
        raise LocalPathNotAllowedError(f"{field}: {shown!r} is inside the server's data directory", field=field)
    return real


def root_of(real: Path, local_roots: list[Path]) -> Path | None:
    """The deepest root holding ``real`` (a resolved path), or None."""
    holding = [Path(root).resolve() for root in local_roots if is_within(real, Path(root).resolve())]
    return max(holding, key=lambda root: len(root.parts)) if holding else None


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def real_path(path: Path, *, roots: list[Path] | None, field: str, shown: str) -> Path:
    """Resolve ``path`` like ``os.path.realpath`` (non-strict), one component at a time.

    With ``roots`` given, a symlink whose own location lies inside one of them is refused
    (LORAMERGE_LOCAL_SYMLINKS=refuse). Never raises for a missing file: the rest is joined as is."""
    current = Path("/")
    pending = list(path.parts[1:])
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:  # missing, not a folder, or not searchable: nothing below can be a symlink we follow
            rest = Path(candidate, *pending)
            return Path(os.path.normpath(rest))
        if not stat.S_ISLNK(mode):
            current = candidate
            continue
        if roots is not None and any(is_within(current, root) for root in roots):
            raise LocalPathNotAllowedError(
                f"{field}: {shown!r} goes through a symlink, and this server follows none inside its local roots "
                "(LORAMERGE_LOCAL_SYMLINKS=refuse)",
                field=field,
            )
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise LocalPathNotAllowedError(f"{field}: {shown!r}: too many levels of symlinks", field=field)
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            current = Path("/")
            pending = list(target.parts[1:]) + pending
        else:
            pending = list(target.parts) + pending
    return current


def parse_s3(uri: str, *, field: str) -> tuple[str, str]:
    match = S3_URI.fullmatch(uri)
    if match is None:
        raise InvalidSourceError(
            f"{field}: {uri!r} is not s3://bucket/prefix (bucket: 3-63 lowercase letters, digits, '.', '-'; "
            "no control characters)",
            field=field,
        )
    prefix = (match.group("prefix") or "").strip("/")
    if ".." in prefix.split("/"):
        raise InvalidSourceError(f"{field}: '..' is not allowed in an s3:// prefix", field=field)
    return match.group("bucket"), prefix


def destination_kind(destination: str | None) -> DestinationKind:
    """Validate ``output.destination``; raise InvalidDestinationError with the accepted forms."""
    if destination is None or destination == "local":
        return "local"
    if destination.startswith("s3://"):
        try:
            bucket, prefix = parse_s3(destination, field="output.destination")
        except InvalidSourceError as exc:
            raise InvalidDestinationError(exc.message, field="output.destination") from None
        if not prefix:
            raise InvalidDestinationError("output.destination: give a prefix, s3://bucket/prefix", field="output.destination")
        return "s3"
    if destination.startswith("hf://") and is_hub_id(destination[len("hf://") :]):
        return "hub"
    raise InvalidDestinationError(
        f"output.destination: {destination!r} is not one of null, 'local', 's3://bucket/prefix', "
        "'hf://org/name' (org and name: letters, digits, '.', '_', '-'; no '..' or '--')",
        field="output.destination",
    )

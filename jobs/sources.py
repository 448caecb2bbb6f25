"""What a source or destination string names, and whether this server may touch it.

Checked twice: by the API before queueing (a 422 the caller can act on) and by the worker before it
reads anything (the record might have been written by an older API with other roots).

  Hub ID       ``org/name`` (+ ``revision``)      pinned to a commit sha by the worker
  local path   absolute, under LORAMERGE_LOCAL_ROOTS after resolving symlinks and ``..``
  object store ``s3://bucket/prefix``
Destinations: null or ``local`` (the local store), ``s3://bucket/prefix``, ``hf://org/name``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from merge_core.errors import MergeError

SourceKind = Literal["hub", "local", "s3"]
DestinationKind = Literal["local", "s3", "hub"]

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"^{_NAME}/{_NAME}$")
HUB_REVISION = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[^\x00-\x1f]*))?$")


class InvalidSourceError(MergeError, ValueError):
    """A source or destination string is malformed (not a Hub ID, path or s3:// URI)."""

    code = "invalid_source"


class LocalPathNotAllowedError(MergeError, ValueError):
    """A local path lies outside LORAMERGE_LOCAL_ROOTS (after resolving symlinks), or local paths are off."""

    code = "local_path_not_allowed"


class InvalidDestinationError(MergeError, ValueError):
    code = "invalid_destination"


def source_kind(source: str) -> SourceKind:
    if source.startswith("s3://"):
        return "s3"
    if source.startswith("/") or source.startswith("~") or source.startswith("file://"):
        return "local"
    return "hub"


def check_source(source: str, revision: str | None, *, local_roots: list[Path], field: str) -> SourceKind:
    kind = source_kind(source)
    if kind == "hub":
        if not HUB_ID.match(source) or ".." in source or "--" in source:
            raise InvalidSourceError(
                f"{field}: {source!r} is not a Hub ID (org/name), an absolute local path or an s3:// URI", field=field
            )
        if revision is not None and (not HUB_REVISION.match(revision) or ".." in revision):
            raise InvalidSourceError(f"{field}: revision {revision!r} is not a branch, tag or commit sha", field=field)
    elif kind == "s3":
        parse_s3(source, field=field)
    else:
        confine(source, local_roots, field=field)
    return kind


def confine(source: str, local_roots: list[Path], *, field: str) -> Path:
    """The real path of ``source`` if it lies under a root; symlinks and ``..`` are resolved first."""
    if not local_roots:
        raise LocalPathNotAllowedError(
            f"{field}: local paths are disabled on this server (LORAMERGE_LOCAL_ROOTS is empty)", field=field
        )
    raw = source.removeprefix("file://")
    real = Path(raw).expanduser().resolve()
    for root in local_roots:
        if real == root or real.is_relative_to(root):
            return real
    raise LocalPathNotAllowedError(f"{field}: {source!r} is outside the allowed local roots", field=field)


def parse_s3(uri: str, *, field: str) -> tuple[str, str]:
    match = S3_URI.match(uri)
    if match is None:
        raise InvalidSourceError(f"{field}: {uri!r} is not s3://bucket/prefix", field=field)
    prefix = (match.group("prefix") or "").strip("/")
    if ".." in prefix.split("/"):
        raise InvalidSourceError(f"{field}: '..' is not allowed in an s3:// prefix", field=field)
    return match.group("bucket"), prefix


def destination_kind(destination: str | None) -> DestinationKind:
    """Validate ``output.destination``; raise InvalidDestinationError with the accepted forms."""
    if destination is None or destination == "local":
        return "local"
    if destination.startswith("s3://"):
        bucket, prefix = parse_s3(destination, field="output.destination")
        if not prefix:
            raise InvalidDestinationError("output.destination: give a prefix, s3://bucket/prefix", field="output.destination")
        return "s3"
    if destination.startswith("hf://") and HUB_ID.match(destination[len("hf://") :]):
        return "hub"
    raise InvalidDestinationError(
        f"output.destination: {destination!r} is not one of null, 'local', 's3://bucket/prefix', 'hf://org/name'",
        field="output.destination",
    )

"""Sinks: publish a finished result folder all at once or not at all, and say where it went.

Each backend is one module in this package with one function registered for its destination kind
(``jobs.sources.destination_kind``: ``local``, ``s3``, ``hub``) by ``@sink``. It returns a
``Published`` (the URI and the file list) and translates its backend's errors: transient ones
(5xx, throttling, unreachable) as ``DestinationUnavailableError`` (retried), the rest as
``DestinationError``. Adding a backend: a module here with ``@sink("kind")`` and its scheme in
``jobs.sources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jobs.records import ResultFile
from worker.backends import Backends


@dataclass
class PublishContext:
    job_id: str
    destination: str | None
    private: bool
    hub_token: str | None
    results_dir: Path
    s3_endpoint_url: str | None
    commit_message: str


@dataclass
class Published:
    uri: str
    files: list[ResultFile]


class Sink(Protocol):
    def __call__(self, folder: Path, *, ctx: PublishContext) -> Published: ...


_SINKS: Backends[Sink] = Backends(__name__, "sink")
sink = _SINKS.register


def publish(folder: Path, *, ctx: PublishContext) -> Published:
    from jobs.sources import destination_kind

    return _SINKS.get(destination_kind(ctx.destination))(folder, ctx=ctx)


def result_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def listing(folder: Path) -> list[ResultFile]:
    """The files of a result folder, as the job record lists them."""
    return [ResultFile(path=p.relative_to(folder).as_posix(), size=p.stat().st_size) for p in result_files(folder)]

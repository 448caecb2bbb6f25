"""Sources: fetch one adapter into the job's staging folder and pin its revision, before any merge.

Each backend is one module in this package with one function registered for its kind
(``jobs.sources.source_kind``: ``hub``, ``local``, ``s3``) by ``@source``; ``fetch`` dispatches. The
function translates its backend's errors into transient ones (retried: ``TransientError``) or
permanent ones (any other MergeError), checks ``ctx.check()`` between files (a cancel or a lost lease
stops a long download), and fetches only the adapter files (``adapter_config.json`` and the weights).
Adding a backend: a module here with ``@source("kind")`` and its scheme in ``jobs.sources``. The
modules are imported by ``worker.backends.Backends`` (pkgutil), so a forgotten import cannot drop one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from merge_core.pipeline import AdapterFolder
from merge_core.spec import AdapterRef
from worker.backends import Backends

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PICKLE_FILE = "adapter_model.bin"


@dataclass
class FetchContext:
    """What a source may use: the job's limits, credentials and checks (built by the runner)."""

    allow_pickle: bool
    max_adapter_bytes: int | None
    hub_token: str | None
    hub_cache_dir: Path
    s3_endpoint_url: str | None
    confinement: object  # worker.sources.local.Confinement
    check: Callable[[], None]  # raises when the job was cancelled or the attempt lost its lease


class Source(Protocol):
    def __call__(self, ref: AdapterRef, *, into: Path, field: str, ctx: FetchContext) -> AdapterFolder: ...


_SOURCES: Backends[Source] = Backends(__name__, "source")
source = _SOURCES.register


def fetch(ref: AdapterRef, *, into: Path, field: str, ctx: FetchContext) -> AdapterFolder:
    """Fetch ``ref`` into ``into`` (Hub files go to the shared cache instead) with its pinned revision."""
    from jobs.sources import source_kind

    return _SOURCES.get(source_kind(ref.source))(ref, into=into, field=field, ctx=ctx)

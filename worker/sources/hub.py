"""Hugging Face Hub sources: pin ``revision`` to a commit sha, then download the adapter files of
that exact commit into the shared cache. ``HF_ENDPOINT`` points the client at a mirror or stand-in.

Errors: 5xx, 429 and network failures are transient (retried with backoff); missing or denied repos
are permanent; our own disk filling up while caching is the runner's ``storage_full``, never a
"Hub unavailable" retry."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from jobs.sources import check_source
from merge_core.errors import PickleRefusedError, SourceNotFoundError
from merge_core.pipeline import AdapterFolder
from merge_core.spec import AdapterRef
from worker.errors import SourceForbiddenError, SourceUnavailableError
from worker.sources import ADAPTER_FILES, PICKLE_FILE, FetchContext, source


@source("hub")
def fetch_hub(ref: AdapterRef, *, into: Path, field: str, ctx: FetchContext) -> AdapterFolder:
    """Pin ``ref.revision`` (default ``main``) to a commit sha and download that commit's adapter files
    into the shared Hub cache (``into`` stays unused: the cache is reused across jobs)."""
    repo_id, token = ref.source, ctx.hub_token
    check_source(repo_id, ref.revision, local_roots=[], field=field)  # again here: the record may predate today's rules
    with hub_errors(repo_id):
        info = HfApi(token=token or False).model_info(repo_id, revision=ref.revision or "main")
        files = {s.rfilename: s for s in info.siblings or []}
        wanted = [ADAPTER_FILES[0]]
        if ADAPTER_FILES[1] in files:
            wanted.append(ADAPTER_FILES[1])
        elif PICKLE_FILE in files and ctx.allow_pickle:
            wanted.append(PICKLE_FILE)
        elif PICKLE_FILE in files:
            raise PickleRefusedError(
                f"{repo_id}@{info.sha[:12]} has only a pickle {PICKLE_FILE}; the server does not load pickles", source=repo_id
            )
        else:
            raise SourceNotFoundError(f"{repo_id}@{info.sha[:12]} has no {ADAPTER_FILES[1]}", source=repo_id)
        paths = []
        for name in wanted:
            ctx.check()
            paths.append(hf_hub_download(repo_id, name, revision=info.sha, cache_dir=ctx.hub_cache_dir, token=token or False))
    return AdapterFolder(path=Path(paths[0]).parent, revision=info.sha)


@contextmanager
def hub_errors(repo: str):
    """Translate huggingface_hub errors: 5xx, 429 and network failures are transient, the rest permanent."""
    try:
        yield
    except GatedRepoError:
        raise SourceForbiddenError(f"{repo} is gated: the token may not read it", source=repo) from None
    except RevisionNotFoundError:
        raise SourceNotFoundError(f"{repo}: revision not found", source=repo) from None
    except RepositoryNotFoundError:
        raise SourceNotFoundError(f"{repo}: repository not found (or private without a token)", source=repo) from None
    except EntryNotFoundError:
        raise SourceNotFoundError(f"{repo}: adapter file missing", source=repo) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is None or status >= 500 or status == 429:
            raise SourceUnavailableError(f"the Hub answered {status} for {repo}", source=repo, status=status) from None
        if status in (401, 403):
            raise SourceForbiddenError(f"{repo}: access denied ({status})", source=repo) from None
        raise SourceNotFoundError(f"{repo}: the Hub answered {status}", source=repo) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise  # the Hub cache's disk is full: storage_full, not a Hub outage
        raise SourceUnavailableError(f"could not reach the Hub for {repo} ({type(exc).__name__})", source=repo) from None
    except (httpx2.TransportError, TimeoutError) as exc:
        raise SourceUnavailableError(f"could not reach the Hub for {repo} ({type(exc).__name__})", source=repo) from None

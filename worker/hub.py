"""One translation of Hugging Face Hub errors, for sources and the Hub sink alike: 5xx, 429 and
network failures are transient (retried with backoff); missing or denied repos are permanent; our own
disk filling up while caching is the runner's ``storage_full``, never a "Hub unavailable" retry.
A file download whose metadata request failed (``LocalEntryNotFoundError``: the Hub down or unreachable,
nothing cached) is transient too, not a missing file."""

from __future__ import annotations

import errno
from collections.abc import Callable
from contextlib import contextmanager

import httpx2
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from jobs.errors import InvalidSourceError
from merge_core.errors import MergeError, SourceNotFoundError
from worker.errors import SourceForbiddenError, SourceUnavailableError


@contextmanager
def hub_errors(repo: str, *, missing: Callable[[str], MergeError] | None = None, what: str = "adapter file"):
    """Translate huggingface_hub errors: 5xx, 429 and network failures are transient, the rest permanent.

    ``missing`` builds the error for a repo, revision or file that does not exist (default
    ``SourceNotFoundError``; the base model's is ``BaseModelError``); ``what`` names a missing file."""
    not_found = missing or (lambda message: SourceNotFoundError(message, source=repo))
    try:
        yield
    except HFValidationError as exc:  # a record older than today's submission rules: permanent, the caller's
        raise InvalidSourceError(f"{repo!r} is not a Hub repository ID the Hub accepts ({exc})", field="source") from None
    except GatedRepoError:
        raise SourceForbiddenError(f"{repo} is gated: the token may not read it", source=repo) from None
    except RevisionNotFoundError:
        raise not_found(f"{repo}: revision not found") from None
    except RepositoryNotFoundError:
        raise not_found(f"{repo}: repository not found (or private without a token)") from None
    except LocalEntryNotFoundError:  # the metadata request failed (Hub down, unreachable) and nothing is cached
        raise SourceUnavailableError(f"could not reach the Hub for {repo} (a file's metadata)", source=repo) from None
    except EntryNotFoundError:
        raise not_found(f"{repo}: {what} missing") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is None or status >= 500 or status == 429:
            raise SourceUnavailableError(f"the Hub answered {status} for {repo}", source=repo, status=status) from None
        if status in (401, 403):
            raise SourceForbiddenError(f"{repo}: access denied ({status})", source=repo) from None
        raise not_found(f"{repo}: the Hub answered {status}") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise  # the Hub cache's disk is full: storage_full, not a Hub outage
        raise SourceUnavailableError(f"could not reach the Hub for {repo} ({type(exc).__name__})", source=repo) from None
    except (httpx2.TransportError, TimeoutError) as exc:
        raise SourceUnavailableError(f"could not reach the Hub for {repo} ({type(exc).__name__})", source=repo) from None

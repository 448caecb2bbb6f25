"""Worker-side errors: a source or a destination failed. Only ``TransientError``s are retried (the Hub
or an object store answering 5xx/429, timeouts, connection resets): the job goes back to ``queued``
and runs again after a backoff, until ``LORAMERGE_MAX_ATTEMPTS``, then fails with the error's code.
Every other error fails the job at once with its code. Codes are in the catalog, ``jobs.errors``."""

from __future__ import annotations

from jobs.errors import ErrorCode
from merge_core.errors import MergeError


class TransientError(Exception):
    """Marks an error as retryable (``retryable = True``). It has no code of its own, so that a
    destination outage is not reported as a source one: raise ``SourceUnavailableError`` or
    ``DestinationUnavailableError``, which carry their own codes."""

    retryable = True


class SourceUnavailableError(TransientError, MergeError):
    """A source's store (the Hub, S3) answered 5xx/429, timed out or reset the connection."""

    code = ErrorCode.source_unavailable


class DestinationUnavailableError(TransientError, MergeError):
    """The destination answered 5xx/429 or timed out; the job is retried like a transient source error."""

    code = ErrorCode.destination_unavailable


class SourceForbiddenError(MergeError, ValueError):
    """The source exists but this token may not read it (private or gated)."""

    code = ErrorCode.source_forbidden


class DestinationError(MergeError):
    """The result could not be published (bucket missing, permission denied, disk full)."""

    code = ErrorCode.destination_failed


class DestinationExistsError(DestinationError):
    """The ``s3://`` destination prefix already holds objects."""

    code = ErrorCode.destination_exists

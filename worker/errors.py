"""Worker-side errors. ``TransientError`` is the only kind that is retried (Hub 5xx, timeouts,
connection resets); every other error fails the job at once with its code."""

from __future__ import annotations

from merge_core.errors import MergeError


class TransientError(MergeError):
    code = "source_unavailable"


class DestinationUnavailableError(TransientError):
    """The destination answered 5xx or timed out; the job is retried like a transient source error."""

    code = "destination_unavailable"


class SourceForbiddenError(MergeError, ValueError):
    """The source exists but this token may not read it (private or gated)."""

    code = "source_forbidden"


class DestinationError(MergeError):
    """The result could not be published (bucket missing, permission denied, disk full)."""

    code = "destination_failed"


class DestinationExistsError(DestinationError):
    code = "destination_exists"

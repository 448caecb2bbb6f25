"""The base of every error the client raises (kept apart so the generated catalog can import it)."""

from __future__ import annotations

from typing import Any


class LoramergeError(Exception):
    """An error from the service or from the client itself.

    ``code``: the stable code (the service's catalog, ``jobs.errors.ErrorCode``, or one of the client's own);
    ``message``: what happened; ``details``: JSON context from the error body (``details.fields`` for a 422);
    ``status``: the HTTP status when the error was an HTTP answer, else ``None``; ``job``: the job when the
    error is a failed (or cancelled) job's, else ``None``; ``retry_after``: seconds the server asked to wait.
    """

    code: str = "loramerge_error"
    http_status: int | None = None  # the status the catalog gives this code (None: never an HTTP answer)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        job: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details or {}
        self.status = status
        self.job = job
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """The same call may succeed later: the server asked to retry (429, 503)."""
        return self.status in (429, 503)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[LoramergeError], message: str, state: dict[str, Any]) -> LoramergeError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error

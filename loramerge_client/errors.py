"""Typed errors: one class per code of the service's catalog, plus the client's own.

Every error is a :class:`LoramergeError` carrying ``code``, ``message``, ``details`` (and ``status``,
``job``, ``retry_after``). The classes of the catalog's codes live in ``_catalog.py``, generated from
``jobs.errors.ErrorCode`` (the client imports no service code, so it keeps a copy);
tests/loramerge_client/test_errors.py fails when the copy is stale and prints the command that renews it.
A code the client does not know yet (a newer server) still raises a plain ``LoramergeError`` with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from loramerge_client import _catalog
from loramerge_client._base import LoramergeError
from loramerge_client._catalog import *  # noqa: F403  (the generated classes are part of this module's API)


# -- the client's own codes (never sent by the server) ------------------------------------------------
class ConnectionFailedError(LoramergeError):
    """The server could not be reached (connection refused, timeout, a dropped download) after the retries."""

    code = "connection_failed"


class InvalidResponseError(LoramergeError):
    """The server answered something the client cannot read (not JSON, a tar that lies about its files)."""

    code = "invalid_response"


class UnsafeArtifactError(LoramergeError):
    """The downloaded tar holds an absolute path, a ``..``, a link or a special file: nothing is extracted."""

    code = "unsafe_artifact"


class WaitTimeoutError(LoramergeError, TimeoutError):
    """``Client.wait`` gave up before the job finished; ``job`` is its last state. The job goes on."""

    code = "wait_timeout"


CLIENT_ERRORS: tuple[type[LoramergeError], ...] = (
    ConnectionFailedError,
    InvalidResponseError,
    UnsafeArtifactError,
    WaitTimeoutError,
)
BY_CODE: dict[str, type[LoramergeError]] = {**_catalog.BY_CODE, **{cls.code: cls for cls in CLIENT_ERRORS}}
__all__ = ["LoramergeError", *_catalog.__all__, *(cls.__name__ for cls in CLIENT_ERRORS)]


def error_for(code: str, message: str, **kwargs: Any) -> LoramergeError:
    """The typed error for ``code`` (``LoramergeError`` itself for a code this client does not know)."""
    cls = BY_CODE.get(code)
    if cls is None:
        return LoramergeError(message, code=code, **kwargs)
    return cls(message, **kwargs)


# -- the generator of _catalog.py (run by the test, which imports the service's catalog) ---------------
NAMES = {"cancelled": "JobCancelledError"}  # a clearer name than the mechanical one (asyncio has a CancelledError)


def class_name(code: str) -> str:
    if code in NAMES:
        return NAMES[code]
    camel = "".join(part.capitalize() for part in code.split("_"))
    return camel if camel.endswith("Error") else camel + "Error"


def render_catalog(codes: Iterable[Any]) -> str:
    """The source of ``_catalog.py`` from the catalog's members (``value``, ``status``, ``where``, ``meaning``)."""
    codes = list(codes)
    out = [
        '"""Generated from the service\'s catalog (jobs.errors.ErrorCode) by loramerge_client.errors.render_catalog:',
        "do not edit. tests/loramerge_client/test_errors.py checks it and prints the command that renews it.",
        '"""',
        "",
        "from loramerge_client._base import LoramergeError",
        "",
    ]
    for code in codes:
        status = "" if code.status is None else f"HTTP {code.status}, "
        doc = f"{code.meaning} ({status}{', '.join(str(w) for w in code.where)})".replace("\\", "\\\\").replace('"""', "'''")
        out += [
            "",
            f"class {class_name(code.value)}(LoramergeError):",
            f'    """{doc}"""',
            "",
            f'    code = "{code.value}"',
            f"    http_status = {code.status}",
            "",
        ]
    out += ["", "BY_CODE: dict[str, type[LoramergeError]] = {"]
    out += [f'    "{code.value}": {class_name(code.value)},' for code in codes]
    out += ["}", "", "__all__ = ["]
    out += [f'    "{class_name(code.value)}",' for code in codes]
    out += ["]", ""]
    return "\n".join(out)

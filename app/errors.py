"""The one place where exceptions become HTTP responses.

Every error leaves the API as ``{"error": {"code", "message", "details"?}}`` with the status that the
catalog (``jobs.errors.ErrorCode``) gives its code. Routes raise ``ApiError`` (a catalog code and a
message) or a typed ``MergeError`` from validation (422); the handlers here translate the rest:
request validation -> ``invalid_request``, Redis or the broker down -> 503 (the client may retry),
anything else -> 500 without internals.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs.errors import ErrorCode
from merge_core.errors import MergeError

log = logging.getLogger("loramerge.api")

RETRY_AFTER_S = "5"  # when the job store or the queue is unreachable


class ApiError(Exception):
    """An error answered with its code's catalog status. ``details`` go into the body as they are
    (JSON-serializable); ``headers`` into the response (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(self, code: ErrorCode, message: str, *, headers: dict[str, str] | None = None, **details: object) -> None:
        if code.status is None:
            raise ValueError(f"{code} is not answered over HTTP: the catalog gives it no status")
        super().__init__(message)
        self.code, self.status, self.message, self.headers, self.details = code, code.status, message, headers, details

    def __reduce__(self):
        return (_rebuild, (self.code, self.message, self.headers, self.details))


def _rebuild(code: ErrorCode, message: str, headers: dict[str, str] | None, details: dict) -> ApiError:
    return ApiError(code, message, headers=headers, **details)


def not_found(job_id: str) -> ApiError:
    return ApiError(ErrorCode.job_not_found, f"no job {job_id!r} for this API key")


def _readable(err: dict) -> str:
    """pydantic's message for one field, as a person would write it: no "Value error, " prefix from our
    own validators, and a JSON syntax error placed by line and column, not a bare character offset."""
    if err.get("type") == "json_invalid":
        loc = err.get("loc", ())
        position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        what = (err.get("ctx") or {}).get("error", "invalid JSON")
        return f"the body is not valid JSON: {what}" + (f" at character {position} (0-based)" if position is not None else "")
    return str(err.get("msg", "")).removeprefix("Value error, ")


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    body = {"code": str(code), "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(
    code: ErrorCode,
    message: str,
    details: dict | None = None,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The response for ``code``: its catalog status unless ``status`` is given (framework errors)."""
    return JSONResponse(error_body(code, message, details), status_code=status or code.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.code, exc.message, exc.details, headers=exc.headers)

    @app.exception_handler(MergeError)
    async def _merge_error(request: Request, exc: MergeError):
        # Raised while checking a request: the caller's input is at fault, whatever the code.
        return error_response(exc.code, exc.message, exc.details, status=_status(exc.code) or 422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        for err in exc.errors():  # our own check inside the body's model (a mergekit configuration): its code
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, MergeError):
                return error_response(cause.code, cause.message, cause.details, status=_status(cause.code) or 422)
        fields = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": _readable(err), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        message = "; ".join(
            f["msg"] if f["type"] == "json_invalid" else f"{'.'.join(f['loc'][1:]) or 'body'}: {f['msg']}" for f in fields
        )
        message = message or "invalid request"
        return error_response(ErrorCode.invalid_request, message, {"fields": fields})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: ErrorCode.not_found, 405: ErrorCode.method_not_allowed}.get(exc.status_code, ErrorCode.http_error)
        return error_response(code, str(exc.detail), status=exc.status_code, headers=getattr(exc, "headers", None))

    # Redis or the broker down: 503 with Retry-After, so clients back off instead of seeing a 500.
    for kind, code, what in (
        (redis.RedisError, ErrorCode.store_unavailable, "the job store (Redis)"),
        (OperationalError, ErrorCode.queue_unavailable, "the job queue"),
    ):
        app.add_exception_handler(kind, _unavailable(code, f"{what} is unreachable; retry shortly"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ErrorCode.internal_error, "internal error; the server log has the details")


def _status(code: str) -> int | None:
    try:
        return ErrorCode(code).status
    except ValueError:  # a code missing from the catalog: tests/jobs/test_error_catalog.py fails on it
        return None


def _unavailable(code: ErrorCode, message: str):
    async def handler(request: Request, exc: Exception):
        log.warning("%s: %s", code, type(exc).__name__)
        return error_response(code, message, headers={"Retry-After": RETRY_AFTER_S})

    return handler

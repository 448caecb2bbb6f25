"""Every error leaves the API as ``{"error": {"code", "message", "details"?}}`` with a 4xx/5xx status.

Routes raise ``ApiError`` (or a typed ``MergeError`` from validation); handlers here translate the rest:
request validation -> 422, Redis or broker down -> 503 (the client may retry), anything else -> 500
without internals.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from merge_core.errors import MergeError

log = logging.getLogger("loramerge.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.details = status, code, message, headers, details


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job {job_id!r} for this API key")


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    body = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(MergeError)
    async def _merge_error(request: Request, exc: MergeError):
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        fields = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(f['loc'][1:]) or 'body'}: {f['msg']}" for f in fields) or "invalid request"
        return JSONResponse(error_body("invalid_request", message, {"fields": fields}), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    # Redis or the broker down: 503 with Retry-After, so clients back off instead of seeing a 500.
    for kind, code, what in (
        (redis.RedisError, "store_unavailable", "the job store (Redis)"),
        (OperationalError, "queue_unavailable", "the job queue"),
    ):
        app.add_exception_handler(kind, _unavailable(code, f"{what} is unreachable; retry shortly"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal error; the server log has the details"), status_code=500)


def _unavailable(code: str, message: str):
    async def handler(request: Request, exc: Exception):
        log.warning("%s: %s", code, type(exc).__name__)
        return JSONResponse(error_body(code, message), status_code=503, headers={"Retry-After": "5"})

    return handler

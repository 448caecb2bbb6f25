"""Refuse request bodies over ``max_request_bytes`` with 413 before they are read into memory."""

from __future__ import annotations

from app.errors import error_response
from jobs.errors import ErrorCode


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        message = f"request body over {self.max_bytes} bytes (LORAMERGE_MAX_REQUEST_BYTES)"
        await error_response(ErrorCode.request_too_large, message)(scope, receive, send)


class _TooLarge(Exception):
    pass

"""``POST /v1/merges`` with ``Content-Type: application/yaml``: the body is a mergekit configuration.

Rewritten, before routing, into the JSON body ``{"mergekit": "<the YAML>"}`` that ``MergeCreate`` takes,
so both forms go through one validation and one fingerprint. Runs inside ``BodyLimitMiddleware``, so the
body it reads is already bounded.
"""

from __future__ import annotations

import json

from app.errors import error_response
from jobs.errors import ErrorCode

YAML_TYPES = {b"application/yaml", b"application/x-yaml", b"text/yaml", b"text/x-yaml"}
PATH = "/v1/merges"


class YamlBodyMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != PATH:
            return await self.app(scope, receive, send)
        headers = list(scope.get("headers") or [])
        content_type = dict(headers).get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type not in YAML_TYPES:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            text = b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            return await error_response(ErrorCode.invalid_spec, "mergekit configuration: not UTF-8 text")(scope, receive, send)
        body = json.dumps({"mergekit": text}).encode()
        kept = [(k, v) for k, v in headers if k not in (b"content-type", b"content-length")]
        scope = {
            **scope,
            "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

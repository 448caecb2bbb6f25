"""A webhook receiver: a real HTTP server in a thread that records every request and answers with
the status its ``answer(n)`` gives for the n-th request (0-based), optionally checking signatures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jobs.webhook_signing import WebhookVerificationError, verify_webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float
    verified: bool | None = None


class WebhookReceiver:
    def __init__(self, answer: Callable[[int], int] | list[int] | int = 200, *, location: str | None = None) -> None:
        if isinstance(answer, int):
            status = answer
            answer = lambda n: status  # noqa: E731
        elif isinstance(answer, list):
            script = list(answer)
            answer = lambda n: script[n] if n < len(script) else 200  # noqa: E731
        self.answer, self.location = answer, location
        self.secrets: list[str] = []  # when set, each request's signature is checked against them
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    status = receiver.answer(len(receiver.received))
                    verified = None
                    if receiver.secrets:
                        try:
                            verify_webhook(headers, body, receiver.secrets)
                            verified = True
                        except WebhookVerificationError:
                            verified = False
                    receiver.received.append(Received(headers, body, status, time.time(), verified))
                self.send_response(status)
                if 300 <= status < 400 and receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} deliveries after {timeout} s"
            time.sleep(0.05)
        return list(self.received)

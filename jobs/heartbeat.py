"""Workers announce themselves in Redis every few seconds; /readyz and /metrics count them.

Our own key with a TTL instead of Celery's broadcast ping: one GET-free SCAN, no pidbox round trip,
and a worker that hangs stops counting within ``TTL_S``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable

import redis

log = logging.getLogger("loramerge.worker")

KEY_PREFIX = "lm:worker:"
INTERVAL_S = 2
TTL_S = 20


def live_workers(client: redis.Redis) -> dict[str, dict]:
    workers = {}
    for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=200):
        raw = client.get(key)
        if raw is not None:
            workers[key[len(KEY_PREFIX) :]] = json.loads(raw)
    return workers


def start_heartbeat(
    client: redis.Redis, *, name: str, queues: list[str], housekeeping: Callable[[], object] | None = None
) -> threading.Event:
    """Beat from a daemon thread until the returned event is set; run ``housekeeping`` at each beat."""
    stop = threading.Event()
    payload = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "queues": queues})

    def beat() -> None:
        while not stop.is_set():
            try:
                client.set(f"{KEY_PREFIX}{name}", payload, ex=TTL_S)
                if housekeeping is not None:
                    housekeeping()
            except redis.RedisError:
                pass  # Redis restarting: the next beat retries
            except Exception:
                log.exception("housekeeping failed")
            stop.wait(INTERVAL_S)
        try:
            client.delete(f"{KEY_PREFIX}{name}")
        except redis.RedisError:
            pass

    threading.Thread(target=beat, name="loramerge-heartbeat", daemon=True).start()
    return stop

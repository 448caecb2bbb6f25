"""Workers announce themselves in Redis every few seconds; /readyz and /metrics count them.

Two kinds of beat, each our own key with a TTL instead of Celery's broadcast ping (no pidbox round
trip): the worker node (Celery's parent process, which also runs the housekeeping sweeps) and each
pool process that runs jobs. A pool process beats from a thread of its own, so one stuck in code
that holds the GIL stops beating, and /readyz stops counting it, within ``TTL_BEATS`` beats.
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

NODE_PREFIX = "lm:worker:"
PROCESS_PREFIX = "lm:proc:"
TTL_BEATS = 10  # a key outlives ten missed beats


def live_workers(client: redis.Redis) -> dict[str, dict]:
    """Worker nodes with a fresh beat, by name."""
    return _live(client, NODE_PREFIX)


def live_processes(client: redis.Redis) -> dict[str, dict]:
    """Pool processes (the ones that run jobs) with a fresh beat, by ``host:pid``."""
    return _live(client, PROCESS_PREFIX)


def _live(client: redis.Redis, prefix: str) -> dict[str, dict]:
    keys = list(client.scan_iter(match=f"{prefix}*", count=200))
    values = client.mget(keys) if keys else []
    return {key[len(prefix) :]: json.loads(raw) for key, raw in zip(keys, values) if raw is not None}


def start_heartbeat(
    client: redis.Redis,
    *,
    name: str,
    queues: list[str],
    interval_s: float,
    process: bool = False,
    housekeeping: Callable[[], object] | None = None,
    report: Callable[[], dict] | None = None,
) -> threading.Event:
    """Beat every ``interval_s`` from a daemon thread until the returned event is set; run
    ``housekeeping`` at each beat, and add what ``report`` says (a process's device and its free
    memory) to each beat. The key lives ``TTL_BEATS`` beats."""
    stop = threading.Event()
    key = f"{PROCESS_PREFIX if process else NODE_PREFIX}{name}"
    fixed = {"host": socket.gethostname(), "pid": os.getpid(), "queues": queues}

    def payload() -> str:
        try:
            extra = report() if report is not None else {}
        except Exception:  # a device that cannot be asked (driver gone) must not stop the beat
            log.exception("device report failed")
            extra = {}
        return json.dumps({**fixed, **extra})

    def beat() -> None:
        while not stop.is_set():
            try:
                client.set(key, payload(), ex=max(1, round(interval_s * TTL_BEATS)))
                if housekeeping is not None:
                    housekeeping()
            except redis.RedisError:
                pass  # Redis restarting: the next beat retries
            except Exception:
                log.exception("housekeeping failed")
            stop.wait(interval_s)
        try:
            client.delete(key)
        except redis.RedisError:
            pass

    threading.Thread(target=beat, name="loramerge-heartbeat", daemon=True).start()
    return stop

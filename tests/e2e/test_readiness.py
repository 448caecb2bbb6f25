"""/readyz and /metrics count the worker processes that beat, so a hung process (frozen here, as a
regex holding the GIL would) stops counting within the heartbeat TTL, and counts again once it runs."""

from __future__ import annotations

import os
import signal
import time

import httpx

from jobs.heartbeat import TTL_BEATS, live_processes


def _wait_for(url: str, status: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_readyz_stops_counting_a_hung_worker_process(stack):
    from jobs.store import connect

    processes = live_processes(connect(stack.settings.redis_url))
    assert len(processes) == 1, processes
    pid = next(iter(processes.values()))["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        response = _wait_for(f"{stack.api_url}/readyz", 503, stack.settings.heartbeat_interval_s * TTL_BEATS + 10)
        assert response.status_code == 503 and response.json()["error"]["code"] == "no_workers", response.text
        metrics = httpx.get(f"{stack.api_url}/metrics").text
        assert "loramerge_worker_processes 0.0" in metrics and "loramerge_workers 1.0" in metrics
    finally:
        os.kill(pid, signal.SIGCONT)
    assert _wait_for(f"{stack.api_url}/readyz", 200, 15).status_code == 200

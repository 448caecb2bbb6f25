"""`python -m worker.healthcheck` (the worker container's healthcheck) answers from the heartbeat keys:
healthy while a pool process on this host beats, unhealthy when none does, 2 when Redis is away."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from jobs.heartbeat import PROCESS_PREFIX, start_heartbeat
from jobs.redis_server import RedisServer
from jobs.store import connect
from worker.healthcheck import healthy


def _check(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORAMERGE_REDIS_URL": url}
    return subprocess.run([sys.executable, "-m", "worker.healthcheck"], env=env, capture_output=True, text=True, timeout=60)


def test_healthy_only_while_a_process_of_this_host_beats(tmp_path):
    server = RedisServer(tmp_path / "redis")
    try:
        url = server.start()
        client = connect(url)
        assert _check(url).returncode == 1
        client.set(f"{PROCESS_PREFIX}elsewhere:1", '{"host": "another-host", "pid": 1}', ex=60)
        assert not healthy(client, socket.gethostname())  # another container's worker does not count
        stop = start_heartbeat(client, name="here:1", queues=["cpu"], interval_s=0.2, process=True)
        deadline = time.monotonic() + 30
        while not healthy(client, socket.gethostname()):
            assert time.monotonic() < deadline, "the beat never appeared"
            time.sleep(0.05)
        ran = _check(url)
        assert ran.returncode == 0 and "healthy" in ran.stdout
        stop.set()
        deadline = time.monotonic() + 30
        while healthy(client, socket.gethostname()):  # a stopped beat deletes its key
            assert time.monotonic() < deadline, "the beat never went away"
            time.sleep(0.05)
        assert _check(url).returncode == 1
    finally:
        server.close()
    assert _check(f"unix://{tmp_path}/gone.sock").returncode == 2

"""`loramerge serve`'s workers are supervised: a worker node killed outright (OOM killer, kill -9 of
the whole process group) is replaced, and jobs submitted afterwards still run."""

from __future__ import annotations

import os
import signal
import time

from jobs.heartbeat import live_workers
from jobs.store import connect
from support.factories import write_adapter_folder
from tests.e2e.conftest import wait_terminal


def test_a_killed_worker_node_is_replaced(stack, alice):
    client = connect(stack.settings.redis_url)
    (old,) = {info["pid"] for info in live_workers(client).values()}
    os.killpg(old, signal.SIGKILL)  # the node and its pool process (the worker runs in its own group)
    deadline = time.monotonic() + 60
    while not {info["pid"] for info in live_workers(client).values()} - {old}:
        assert time.monotonic() < deadline, "no new worker node after 60 s"
        time.sleep(0.5)
    source = str(write_adapter_folder(stack.roots / "after-restart", seed=21))
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source}]}).json()
    assert wait_terminal(alice, job["id"])["status"] == "succeeded"


def test_a_killed_embedded_redis_is_started_again_on_its_aof(stack, alice):
    import psutil

    source = str(write_adapter_folder(stack.roots / "before-redis-kill", seed=22))
    before = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source}]}).json()
    assert wait_terminal(alice, before["id"])["status"] == "succeeded"
    socket_path = stack.settings.redis_url.removeprefix("unix://")
    (server,) = [p for p in psutil.Process().children() if socket_path in " ".join(p.cmdline())]
    server.kill()
    deadline = time.monotonic() + 60
    while True:  # the supervisor starts it again within seconds; the API answers 503 meanwhile
        response = alice.get(f"/v1/merges/{before['id']}")
        if response.status_code == 200:
            break
        assert response.status_code == 503 and time.monotonic() < deadline, response.text
        time.sleep(0.5)
    assert response.json()["status"] == "succeeded"  # the record survived on the AOF
    job = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source, "weight": 0.5}]}).json()
    assert wait_terminal(alice, job["id"])["status"] == "succeeded"

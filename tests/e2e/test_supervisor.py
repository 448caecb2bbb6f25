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

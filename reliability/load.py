"""Load: N jobs from M concurrent clients against a stack with 2 workers; every job reaches a
terminal state once; the queue bound answers 429 with Retry-After."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from jobs.processes import die_with_parent
from support.factories import write_adapter_folder
from support.stack import KEYS, ProcessStack, free_port


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load(stack: ProcessStack, jobs: int = 500, clients: int = 50) -> dict:
    sources = [str(write_adapter_folder(stack.roots / f"load-{i}", seed=i)) for i in range(4)]
    pool = [
        httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {KEYS['alice']}"}, timeout=60) for _ in range(clients)
    ]

    def submit(i: int) -> tuple[float, int, str]:
        spec = {
            "method": "task_arithmetic",
            "adapters": [{"source": sources[i % 4]}, {"source": sources[(i + 1) % 4], "weight": 1 + i / jobs}],
        }
        started = time.perf_counter()
        response = pool[i % clients].post("/v1/merges", json=spec, headers={"Idempotency-Key": f"load-{i}"})
        return time.perf_counter() - started, response.status_code, response.json().get("id", "")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as executor:
        results = list(executor.map(submit, range(jobs)))
    ids = [job_id for _, status, job_id in results if status == 202]
    with stack.client() as client:
        finished = {job_id: stack.wait_terminal(client, job_id, timeout=600)["status"] for job_id in ids}
    elapsed = time.perf_counter() - started
    latencies = [latency for latency, _, _ in results]
    assert len(ids) == jobs == len(set(ids)), f"{len(ids)} accepted, {len(set(ids))} distinct"
    assert set(finished.values()) == {"succeeded"}, {s: list(finished.values()).count(s) for s in set(finished.values())}
    for client in pool:
        client.close()
    return {
        "jobs": jobs,
        "clients": clients,
        "p50_ms": round(_percentile(latencies, 0.5) * 1000),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000),
        "all_terminal_s": round(elapsed, 1),
        "duplicates": 0,
    }


def queue_bound(stack: ProcessStack) -> dict:
    """A second API on the same Redis with a small bound and queues no worker consumes."""
    source = str(write_adapter_folder(stack.roots / "bound", seed=9))
    port = free_port()
    env = {
        **stack.env,
        "LORAMERGE_MAX_QUEUED_JOBS": "5",
        "LORAMERGE_CPU_QUEUE": "bound-cpu",
        "LORAMERGE_GPU_QUEUE": "bound-gpu",
        "LORAMERGE_RETRY_AFTER_S": "7",
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port), "--log-level", "warning"],
        env=env,
        preexec_fn=die_with_parent(signal.SIGTERM),  # a killed suite leaves no API behind
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['bob']}"}) as client:
            answers = [
                client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": source, "weight": 1 + i}]})
                for i in range(8)
            ]
            accepted = [a.json()["id"] for a in answers if a.status_code == 202]
            refused = [a for a in answers if a.status_code == 429]
            for job_id in accepted:
                client.delete(f"/v1/merges/{job_id}")
    finally:
        api.terminate()
        api.wait(timeout=30)
    assert refused and all(a.headers["retry-after"] == "7" and a.json()["error"]["code"] == "queue_full" for a in refused)
    assert len(accepted) <= 5
    return {"bound": 5, "accepted": len(accepted), "refused_429": len(refused), "retry_after_s": 7}

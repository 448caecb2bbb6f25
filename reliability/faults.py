"""Fault scenarios: each kills or breaks one real part mid-run and checks that no job is lost."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time

import httpx

from reliability.stack import ProcessStack
from tests.factories import write_adapter_folder

SLOW_SHAPES = {f"model.layers.{i}.mlp.up_proj": (512, 512) for i in range(300)}


def slow_spec(stack: ProcessStack, name: str) -> dict:
    sources = [str(write_adapter_folder(stack.roots / f"{name}-{i}", shapes=SLOW_SHAPES, rank=8, seed=i)) for i in range(3)]
    return {"method": "ties", "adapters": [{"source": s} for s in sources], "output": {"rank": 8}}


def small_spec(stack: ProcessStack, name: str, seed: int = 0) -> dict:
    source = str(write_adapter_folder(stack.roots / f"{name}-{seed}", seed=seed))
    return {"method": "task_arithmetic", "adapters": [{"source": source}]}


def weights_digest(stack: ProcessStack, job_id: str) -> str:
    return hashlib.sha256((stack.settings.results_dir / job_id / "adapter_model.safetensors").read_bytes()).hexdigest()


def worker_kill(stack: ProcessStack) -> dict:
    """kill -9 of the process running a merge: redelivered, finished once, same bytes as undisturbed."""
    spec = slow_spec(stack, "kill")
    with stack.client() as client:
        reference = stack.wait_terminal(client, client.post("/v1/merges", json=spec).json()["id"])
        assert reference["status"] == "succeeded", reference
        job = client.post("/v1/merges", json={**spec, "params": {"scaling": 1.0}}).json()
        running = stack.wait_running(client, job["id"])
        pid = int(running["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        done = stack.wait_terminal(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2, f"attempts {done['attempts']}"
    assert weights_digest(stack, job["id"]) == weights_digest(stack, reference["id"]), "output differs from the undisturbed run"
    assert not (stack.settings.staging_dir / job["id"]).exists()
    return {"attempts": done["attempts"], "recovered_in_s": round(time.monotonic() - killed_at, 1), "bytes_identical": True}


def redis_restart(stack: ProcessStack, downtime_s: float = 3.0) -> dict:
    """Redis stopped mid-run (AOF on) and started again: no record lost; the API answers 503 meanwhile."""
    with stack.client() as client:
        slow = client.post("/v1/merges", json=slow_spec(stack, "redis")).json()["id"]
        small = [client.post("/v1/merges", json=small_spec(stack, "redis-small", seed=i)).json()["id"] for i in range(5)]
        stack.wait_running(client, slow)
        stack.redis.stop()
        statuses = []
        deadline = time.monotonic() + downtime_s
        while time.monotonic() < deadline:
            for call in (
                lambda: client.get(f"/v1/merges/{slow}"),
                lambda: client.post("/v1/merges", json=small_spec(stack, "redis-down")),
            ):
                response = call()
                statuses.append((response.status_code, response.json()["error"]["code"] if response.status_code >= 400 else ""))
            time.sleep(0.1)
        stack.redis.start()
        recovered = time.monotonic()
        while client.get("/healthz").status_code != 200 or client.get(f"/v1/merges/{slow}").status_code != 200:
            time.sleep(0.1)
        recovery_s = time.monotonic() - recovered
        finished = [stack.wait_terminal(client, job_id) for job_id in [slow, *small]]
    assert {s for s, _ in statuses} == {503}, f"answers during the outage: {sorted(set(statuses))}"
    assert {c for _, c in statuses} == {"store_unavailable"}
    assert [j["status"] for j in finished] == ["succeeded"] * 6, [(j["status"], j["error"]) for j in finished]
    return {"outage_requests": len(statuses), "all_503": True, "api_recovered_s": round(recovery_s, 2), "jobs_succeeded": "6/6"}


def api_restart(stack: ProcessStack) -> dict:
    """The API process killed while jobs run and started again: nothing lost, polling resumes."""
    with stack.client() as client:
        ids = [
            client.post("/v1/merges", json=slow_spec(stack, "api"), headers={"Idempotency-Key": "api-restart-slow"}).json()["id"]
        ]
        ids += [client.post("/v1/merges", json=small_spec(stack, "api-small", seed=i)).json()["id"] for i in range(5)]
        stack.wait_running(client, ids[0])
        stack.kill_api()
        try:
            client.get("/healthz", timeout=2)
            raise AssertionError("API still answering after kill")
        except httpx.TransportError:
            pass
        stack.start_api()
        stack.wait_ready()
        replay = client.post("/v1/merges", json=slow_spec(stack, "api"), headers={"Idempotency-Key": "api-restart-slow"}).json()
        finished = [stack.wait_terminal(client, job_id) for job_id in ids]
    assert replay["id"] == ids[0], "idempotency lost across the restart"
    assert [j["status"] for j in finished] == ["succeeded"] * len(ids)
    return {"jobs_succeeded": f"{len(ids)}/{len(ids)}", "idempotency_kept": True}


def transient_and_missing_source(stack: ProcessStack) -> dict:
    """Hub answering 503 twice then 200 is retried to success; a 404 fails at once."""
    files = {p.name: p.read_bytes() for p in write_adapter_folder(stack.roots / "hub-src", seed=3).iterdir()}
    stack.hub.add_repo("rel/flaky", files)
    stack.hub.fail("GET", "/api/models/rel/flaky", 503, times=2)
    with stack.client() as client:
        flaky = stack.wait_terminal(
            client,
            client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": "rel/flaky"}]}).json()["id"],
        )
        missing = stack.wait_terminal(
            client,
            client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": "rel/missing"}]}).json()["id"],
        )
    assert (flaky["status"], flaky["attempts"]) == ("succeeded", 3), flaky
    assert (missing["status"], missing["error"]["code"], missing["attempts"]) == ("failed", "source_not_found", 1), missing
    return {
        "503x2_then_200": f"succeeded after {flaky['attempts']} attempts",
        "404": f"{missing['error']['code']} after 1 attempt",
    }


def unwritable_sink(stack: ProcessStack) -> dict:
    """The local result store cannot be written: a clear code, no partial result, store intact after."""
    results = stack.settings.results_dir
    results.mkdir(parents=True, exist_ok=True)
    aside = results.with_name("results-aside")
    results.rename(aside)
    results.write_text("not a folder")
    try:
        with stack.client() as client:
            done = stack.wait_terminal(client, client.post("/v1/merges", json=small_spec(stack, "sink")).json()["id"])
    finally:
        results.unlink()
        aside.rename(results)
    assert (done["status"], done["error"]["code"]) == ("failed", "destination_failed"), done
    assert not (results / done["id"]).exists() and not (stack.settings.staging_dir / done["id"]).exists()
    return {"code": done["error"]["code"], "partial_result": False}


def disk_full(base) -> dict:
    """A worker whose files may not grow past 1 MiB (RLIMIT_FSIZE, as a full disk): storage_full, nothing left."""
    shapes = {f"model.layers.{i}.mlp.up_proj": (512, 512) for i in range(8)}
    with ProcessStack(base / "disk-full", worker_file_limit=1 << 20) as stack, stack.client() as client:
        sources = [str(write_adapter_folder(stack.roots / f"big-{i}", shapes=shapes, rank=16, seed=i)) for i in range(3)]
        done = stack.wait_terminal(
            client,
            client.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": s} for s in sources]}).json()[
                "id"
            ],
        )
        leftovers = list(stack.settings.results_dir.glob("*")) + list(stack.settings.staging_dir.glob("*"))
    assert (done["status"], done["error"]["code"]) == ("failed", "storage_full"), done
    assert not leftovers, leftovers
    shutil.rmtree(base / "disk-full", ignore_errors=True)
    return {"code": done["error"]["code"], "partial_result": False}


def worker_node_kill(stack: ProcessStack) -> dict:
    """kill -9 of a whole worker (Celery parent and the child merging): its message stays unacked
    until the visibility timeout, so another worker must notice the lost holder and requeue the job."""
    import psutil

    spec = slow_spec(stack, "node")
    with stack.client() as client:
        job = client.post("/v1/merges", json=spec).json()
        running = stack.wait_running(client, job["id"])
        child = psutil.Process(int(running["worker"].rsplit(":", 1)[1]))
        parent = child.parent()
        index = next(i for i, proc in enumerate(stack.workers) if proc.pid == parent.pid)
        parent.kill()
        child.kill()
        stack.workers[index].wait()
        killed_at = time.monotonic()
        done = stack.wait_terminal(client, job["id"])
        recovered_s = time.monotonic() - killed_at
        stack.workers[index] = stack.start_worker(index)  # back to full strength for the next scenarios
    assert (done["status"], done["attempts"]) == ("succeeded", 2), done
    assert not (stack.settings.staging_dir / job["id"]).exists()
    return {"attempts": done["attempts"], "recovered_in_s": round(recovered_s, 1), "requeued_by": "another worker's lease check"}

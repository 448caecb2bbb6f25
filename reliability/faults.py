"""Fault scenarios: each kills or breaks one real part mid-run and checks that no job is lost."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time

import httpx

from support.factories import write_adapter_folder
from support.stack import ProcessStack

SLOW_SHAPES = {f"model.layers.{i}.mlp.up_proj": (512, 512) for i in range(300)}
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


def slow_spec(stack: ProcessStack, name: str) -> dict:
    sources = [str(write_adapter_folder(stack.roots / f"{name}-{i}", shapes=SLOW_SHAPES, rank=8, seed=i)) for i in range(3)]
    return {"method": "ties", "adapters": [{"source": s} for s in sources], "output": {"rank": 8}}


_WRITING = threading.Lock()


def small_spec(stack: ProcessStack, name: str, seed: int = 0) -> dict:
    """A one-adapter job on ``<name>-<seed>``, written once: the crash scenario submits one seed from several threads
    while workers read it, and rewriting it would let a worker read a half-written adapter_config.json."""
    folder = stack.roots / f"{name}-{seed}"
    with _WRITING:
        if not (folder / "adapter_config.json").exists():  # written last, so the folder is whole
            write_adapter_folder(folder, seed=seed)
    return {"method": "task_arithmetic", "adapters": [{"source": str(folder)}]}


def wait_removed(*paths, timeout: float = 60.0) -> None:
    """A worker removes an attempt's staging folder just after it records the outcome (the runner's
    ``finally``): wait for that, as a condition, instead of racing it on a busy machine."""
    deadline = time.monotonic() + timeout
    while left := [str(p) for p in paths if p.exists()]:
        assert time.monotonic() < deadline, f"still there {timeout:.0f} s after the job ended: {left}"
        time.sleep(0.1)


def weights_digest(stack: ProcessStack, job_id: str) -> str:
    return hashlib.sha256((stack.settings.results_dir / job_id / "adapter_model.safetensors").read_bytes()).hexdigest()


def worker_kill(stack: ProcessStack) -> dict:
    """kill -9 of the process running a merge: redelivered, finished once, same bytes as undisturbed."""
    spec = slow_spec(stack, "kill")
    with stack.client() as client:
        reference = stack.wait_terminal(client, client.post("/v1/merges", json=spec).json()["id"])
        assert reference["status"] == "succeeded", reference
        job = client.post("/v1/merges", json={**spec, "params": {"scaling": "auto"}}).json()
        running = stack.wait_running(client, job["id"])
        pid = int(running["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        done = stack.wait_terminal(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2, f"attempts {done['attempts']}"
    assert weights_digest(stack, job["id"]) == weights_digest(stack, reference["id"]), "output differs from the undisturbed run"
    wait_removed(stack.settings.staging_dir / job["id"])
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
    assert not (results / done["id"]).exists(), "a partial result was left"
    wait_removed(stack.settings.staging_dir / done["id"])
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
        wait_removed(*stack.settings.staging_dir.glob("*"))
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
    wait_removed(stack.settings.staging_dir / job["id"])
    return {"attempts": done["attempts"], "recovered_in_s": round(recovered_s, 1), "requeued_by": "another worker's lease check"}


def frozen_holder(stack: ProcessStack) -> dict:
    """SIGSTOP the process merging a job until another worker takes the job over, then SIGCONT it:
    the woken holder notices its lost lease, abandons the attempt without writing anything, and the
    job ends once, by the new holder, not cancelled (nobody asked)."""
    spec = slow_spec(stack, "frozen")
    with stack.client() as client:
        job = client.post("/v1/merges", json=spec).json()
        running = stack.wait_running(client, job["id"])
        frozen = int(running["worker"].rsplit(":", 1)[1])
        os.kill(frozen, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 120
            while True:  # taken over: running again, under another process
                state = client.get(f"/v1/merges/{job['id']}").json()
                if state["status"] == "running" and state["worker"] != running["worker"] or state["status"] in TERMINAL_STATES:
                    break
                assert time.monotonic() < deadline, f"never taken over: {state}"
                time.sleep(0.1)
            taken_over_s = round(time.monotonic() - deadline + 120, 1)
        finally:
            os.kill(frozen, signal.SIGCONT)
        done = stack.wait_terminal(client, job["id"])
    deadline = time.monotonic() + 30
    while "abandoned" not in (logs := "".join(p.read_text(errors="replace") for p in stack.base.glob("worker-*.log"))):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    finishes = logs.count(f"job {job['id']} succeeded")
    assert (done["status"], done["cancel_requested"], done["attempts"]) == ("succeeded", False, 2), done
    assert finishes == 1, f"the job was recorded as succeeded {finishes} times in the worker logs"
    assert f"job {job['id']}: attempt 1" in logs and "abandoned" in logs, "the frozen holder did not report abandoning"
    return {"taken_over_after_s": taken_over_s, "finished_once": True, "old_holder": "abandoned untouched"}


def stranded_queued(stack: ProcessStack, rounds: int = 3, per_round: int = 12) -> dict:
    """A job accepted with 202 reaches a worker within a bounded time after Redis crashes: (a) a queued
    record whose message is gone gets one again from the workers' sweep; (b) Redis kill -9'ed and
    restarted on its AOF while clients keep submitting, three times: every accepted job finishes."""
    from concurrent.futures import ThreadPoolExecutor

    from jobs.records import JobRecord
    from jobs.store import JobStore, connect

    store = JobStore(connect(stack.settings.redis_url), finished_ttl_s=3600)
    lost = JobRecord(tenant="alice", spec=small_spec(stack, "stranded"), queue=stack.settings.cpu_queue)
    store.create(lost, max_queued=10_000)  # a record whose message never reached the broker
    started = time.monotonic()
    with stack.client() as client:
        first = stack.wait_terminal(client, lost.id, timeout=stack.settings.stranded_after_s + 60)
    resent_after_s = round(time.monotonic() - started, 1)
    assert first["status"] == "succeeded", first

    accepted: list[str] = []

    def submit(i: int) -> None:
        with stack.client() as client:
            try:
                response = client.post("/v1/merges", json=small_spec(stack, "crash", seed=i % 4))
            except httpx.TransportError:
                return
            if response.status_code == 202:
                accepted.append(response.json()["id"])

    for round_ in range(rounds):
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(submit, round_ * per_round + i) for i in range(per_round)]
            time.sleep(0.3)
            stack.redis.kill()
            time.sleep(0.5)
            stack.redis.start()
            for future in futures:
                future.result()
    restarted = time.monotonic()
    with stack.client() as client:
        finished = [stack.wait_terminal(client, job_id, timeout=stack.settings.stranded_after_s + 90) for job_id in accepted]
    assert accepted, "no job was accepted around the crashes"
    assert all(j["status"] == "succeeded" for j in finished), [(j["id"], j["status"], j["error"]) for j in finished]
    return {
        "lost_message_resent_in_s": resent_after_s,
        "accepted_during_crashes": len(accepted),
        "all_finished_in_s": round(time.monotonic() - restarted, 1),
    }

"""A stack of real processes whose parts can be killed and restarted one by one: a Redis server
(AOF on), Celery workers, the webhook worker, the API under uvicorn, and the Hub stand-in for remote
sources."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.embedded import webhook_worker_command, worker_command
from jobs.processes import die_with_parent, stop_processes
from jobs.redis_server import RedisServer
from jobs.settings import Settings
from support.standins.hub import HubStandIn
from support.standins.server import free_port

# Every process of a stack gets SIGTERM when the process that started it dies, so a test run that is
# killed (kill -9, a CI timeout) leaves no workers, API or Redis behind to eat the next run's CPU.
_die_with_test_run = die_with_parent(signal.SIGTERM)

KEYS = {"alice": "rel-key-alice-4f9a", "bob": "rel-key-bob-77c1"}
TERMINAL = {"succeeded", "failed", "cancelled"}


class ProcessStack:
    def __init__(self, base: Path, *, workers: int = 1, worker_file_limit: int | None = None, **settings) -> None:
        self.base = Path(base)
        self.roots = self.base / "roots"
        self.roots.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            data_dir=self.base / "data",
            local_roots=[self.roots],
            api_keys=",".join(f"{k}:{t}" for t, k in KEYS.items()),
            device="cpu",
            retry_backoff_s=0.2,
            **settings,
        )
        self.n_workers, self.worker_file_limit = workers, worker_file_limit
        self.redis = RedisServer(self.base / "redis")
        self.hub = HubStandIn(tokens=set())
        self.workers: list[subprocess.Popen] = []
        self.webhook_worker: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ProcessStack:
        redis_url = self.redis.start()
        hub_url = self.hub.start()
        self.env = {
            **os.environ,
            **self.settings.to_env(),
            "LORAMERGE_REDIS_URL": redis_url,
            "HF_ENDPOINT": hub_url,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(self.base / "hf-home"),
        }
        self.settings = self.settings.model_copy(update={"redis_url": redis_url})
        for i in range(self.n_workers):
            self.workers.append(self.start_worker(i))
        self.webhook_worker = self.start_webhook_worker()
        self.start_api()
        self.wait_ready()
        return self

    def start_worker(self, index: int) -> subprocess.Popen:
        limit = self.worker_file_limit

        def limit_files() -> None:
            _die_with_test_run()
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        log = (self.base / f"worker-{index}.log").open("ab")
        return subprocess.Popen(
            worker_command(self.settings, f"rel-{index}-{time.monotonic_ns()}@%h"),
            env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_files,
        )  # fmt: skip

    def start_webhook_worker(self) -> subprocess.Popen:
        log = (self.base / "webhook-worker.log").open("ab")
        return subprocess.Popen(
            webhook_worker_command(self.settings, f"rel-webhooks-{time.monotonic_ns()}@%h"),
            env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_test_run,
        )  # fmt: skip

    def start_api(self) -> None:
        log = (self.base / "api.log").open("ab")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_test_run,
        )  # fmt: skip

    def kill_api(self) -> None:
        self.api.send_signal(signal.SIGKILL)
        self.api.wait()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"stack not ready; see logs in {self.base}")

    def close(self) -> None:
        stop_processes(
            [*self.workers, *([self.webhook_worker] if self.webhook_worker else []), *([self.api] if self.api else [])]
        )
        self.redis.close()
        self.hub.stop()

    def __enter__(self) -> ProcessStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- clients ------------------------------------------------------------------------------
    def client(self, tenant: str | None = "alice", **headers) -> httpx.Client:
        auth = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers={**auth, **headers}, timeout=30)

    def wait_terminal(self, client: httpx.Client, job_id: str, timeout: float = 180, *, cap: float = 1500) -> dict:
        """Poll through API restarts and store outages (transport errors and 503s are waited out).
        ``timeout`` counts from the job's last visible change (status, attempt, worker, progress), so a
        merge that crawls on a busy machine is waited for, while one that stalls fails after ``timeout``
        saying so; ``cap`` bounds the whole wait."""
        started = changed = time.monotonic()
        job, seen = None, None
        while True:
            try:
                response = client.get(f"/v1/merges/{job_id}")
                if response.status_code == 200:
                    job = response.json()
                    if job["status"] in TERMINAL:
                        return job
                    if _movement(job) != seen:
                        seen, changed = _movement(job), time.monotonic()
            except httpx.TransportError:
                pass
            now = time.monotonic()
            if now - changed > timeout or now - started > cap:
                raise AssertionError(
                    f"job {job_id} not terminal after {now - started:.0f} s, unchanged for {now - changed:.0f} s "
                    f"(limits {timeout:.0f} s unchanged, {cap:.0f} s in all): {job}"
                )
            time.sleep(0.1)

    def wait_running(self, client: httpx.Client, job_id: str, timeout: float = 120, *, cap: float = 900) -> dict:
        """Until the job is merging (progress past the first module); ``timeout`` counts from the job's
        last visible change, as in ``wait_terminal``."""
        started = changed = time.monotonic()
        job, seen = None, None
        while True:
            job = client.get(f"/v1/merges/{job_id}").json()
            if job["status"] == "running" and job["progress"]["stage"] == "merge" and job["progress"]["done"] > 0:
                return job
            if job["status"] in TERMINAL:
                raise AssertionError(f"job finished before it could be disturbed: {job}")
            if _movement(job) != seen:
                seen, changed = _movement(job), time.monotonic()
            now = time.monotonic()
            if now - changed > timeout or now - started > cap:
                raise AssertionError(
                    f"job never started merging: unchanged for {now - changed:.0f} s, {now - started:.0f} s in all: {job}"
                )
            time.sleep(0.05)


def _movement(job: dict) -> tuple:
    """What changes while a job moves: a busy machine slows it, a stall stops it."""
    progress = job.get("progress") or {}
    return job["status"], job.get("attempts"), job.get("worker"), progress.get("stage"), progress.get("done")

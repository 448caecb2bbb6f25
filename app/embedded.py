"""``loramerge serve``: the whole service on one machine, no Docker, no external services.

Starts a private Redis (unless LORAMERGE_REDIS_URL names one), worker processes consuming both
queues, and the API under uvicorn. Without API keys it binds only to loopback.

Stop (SIGTERM, SIGINT or SIGHUP) runs in order: the API stops accepting
and finishes its requests; the workers get ``LORAMERGE_SHUTDOWN_GRACE_S`` to finish their running
jobs, then a cold shutdown, and a job still running is handed back to the queue with its attempt
refunded; Redis stops last, after flushing its AOF. While it runs, a worker or the embedded Redis that
dies is started again (``Supervisor``). One ``serve`` per data folder (jobs.processes).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from jobs.errors import DataDirInUseError, ErrorCode
from jobs.logs import LOG_NAME_ENV, wants_own_logging
from jobs.processes import DataDirLock, die_with_parent, stop_workers
from jobs.queue import enqueue, make_celery, send_deliveries, waiting_job_ids
from jobs.redis_server import RedisServer
from jobs.settings import Settings
from jobs.store import JobStore, connect

log = logging.getLogger("loramerge.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def worker_command(settings: Settings, name: str) -> list[str]:
    """The Celery worker `loramerge serve` starts (the reliability suite starts the very same one)."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", f"{settings.gpu_queue},{settings.cpu_queue}", "--concurrency", str(settings.worker_concurrency),
        "--loglevel", "INFO", "-n", name, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def parse_gpus(spec: str, *, visible: str | None, listed: str | None) -> list[str]:
    """``serve --gpus``: ``all`` (every GPU ``nvidia-smi -L`` lists, or ``CUDA_VISIBLE_DEVICES`` when set)
    or a comma list of indices. Returns the device ids to hand each worker as ``CUDA_VISIBLE_DEVICES``.

    Raises:
        ValueError: no GPU found, or an entry that is not a GPU index.
    """
    if spec == "all":
        if visible:
            gpus = [g.strip() for g in visible.split(",") if g.strip()]
        else:
            gpus = [str(i) for i, line in enumerate((listed or "").splitlines()) if line.startswith("GPU ")]
        if not gpus:
            raise ValueError("--gpus all: no GPU found (nvidia-smi -L lists none and CUDA_VISIBLE_DEVICES is unset)")
        return gpus
    gpus = [g.strip() for g in spec.split(",") if g.strip()]
    bad = [g for g in gpus if not g.isdigit()]
    if bad or not gpus:
        raise ValueError(f"--gpus {spec!r}: expected 'all' or GPU indices such as '0,1'")
    return gpus


def gpu_env(gpus: list[str] | None, i: int) -> dict[str, str]:
    """The environment that pins worker ``i`` to its GPU (nothing without ``--gpus``)."""
    return {"CUDA_VISIBLE_DEVICES": gpus[i], "LORAMERGE_DEVICE": "cuda"} if gpus else {}


def webhook_worker_command(settings: Settings, name: str) -> list[str]:
    """The webhook worker: its own queue and a thread pool, so no merge ever holds a delivery up."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.webhook_app", "worker",
        "-Q", settings.webhook_queue, "-P", "threads", "--concurrency", str(settings.webhook_concurrency),
        "--loglevel", "INFO", "-n", name, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


@contextmanager
def embedded_stack(
    settings: Settings,
    *,
    workers: int = 1,
    worker_log=None,
    extra_env: dict[str, str] | None = None,
    gpus: list[str] | None = None,
):
    """Yield settings pointing at a running Redis with ``workers`` worker processes listening, or, with
    ``gpus``, one worker per GPU that sees only its own (``CUDA_VISIBLE_DEVICES``, device ``cuda``).
    Holds the data folder's lock for as long as any of its processes lives."""
    workers = len(gpus) if gpus else workers
    with DataDirLock(settings.data_dir) as lock:
        server = None
        if settings.redis_url:
            redis_url = settings.redis_url
        else:
            server = RedisServer(settings.data_dir / "redis", appendfsync=settings.redis_appendfsync, pass_fds=(lock.fd,))
            redis_url = server.start()
            log.info("embedded Redis on %s (data in %s)", redis_url, server.folder)
        env = {**os.environ, **settings.to_env(), "LORAMERGE_REDIS_URL": redis_url, **(extra_env or {})}

        def spawn(i: int) -> subprocess.Popen:  # the last one is the webhook worker
            command = webhook_worker_command if i == workers else worker_command
            return subprocess.Popen(
                command(settings, f"embedded-{'webhooks' if i == workers else i}@%h"),
                env={**env, **gpu_env(gpus, i), LOG_NAME_ENV: f"worker-{i}"}
                if i < workers
                else {**env, LOG_NAME_ENV: "webhooks"},
                stdout=worker_log,
                stderr=subprocess.STDOUT if worker_log is not None else None,
                pass_fds=(lock.fd,),
                preexec_fn=die_with_parent(signal.SIGKILL, own_group=True),
            )

        supervisor = Supervisor(spawn, workers + 1, server)
        running = settings.model_copy(update={"redis_url": redis_url})

        def after_workers() -> None:
            hand_back_running_jobs(running)
            if server is not None:
                server.close()

        try:
            yield running
        finally:
            log.info("stopping workers (up to %.0f s for running jobs)", settings.shutdown_grace_s)
            supervisor.stop(settings.shutdown_grace_s, then=after_workers)
            log.info("stopped")


class Supervisor:
    """Keeps the embedded Redis and ``count`` worker processes running: one that dies (OOM killer,
    kill -9) is started again within ``CHECK_S`` (Redis on its own AOF, at the same socket), at most
    ``MAX_RESTARTS`` times a minute each (past that a crash loop is reported, not fed; /readyz then
    answers 503). Restarted children are started from the supervisor's thread, and each child dies with
    the thread that started it (PR_SET_PDEATHSIG), so that thread lives until the whole stop is over."""

    CHECK_S = 2.0
    MAX_RESTARTS = 5

    def __init__(self, spawn, count: int, server: RedisServer | None) -> None:
        self.spawn, self.server = spawn, server
        self.procs = [spawn(i) for i in range(count)]
        self._stopping, self._released = threading.Event(), threading.Event()
        self._restarts: dict[str, list[float]] = {}
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self.CHECK_S):
            if self.server is not None and self.server.process.poll() is not None and self._may_restart("redis"):
                log.warning("the embedded Redis exited with %s; starting it again on its AOF", self.server.process.returncode)
                try:
                    self.server.start()
                except RuntimeError as exc:
                    log.error("the embedded Redis did not start again: %s", exc)
            for i, proc in enumerate(self.procs):
                if proc.poll() is None or self._stopping.is_set() or not self._may_restart(f"worker {i}"):
                    continue
                log.warning("worker %d exited with %s; starting a new one", i, proc.returncode)
                self.procs[i] = self.spawn(i)
        self._released.wait()

    def _may_restart(self, what: str) -> bool:
        moment = time.monotonic()
        recent = [t for t in self._restarts.get(what, []) if moment - t < 60]
        if len(recent) >= self.MAX_RESTARTS:
            log.error("%s died again; %d restarts in the last minute, not restarting", what, len(recent))
            self._restarts[what] = recent
            return False
        self._restarts[what] = [*recent, moment]
        return True

    def stop(self, grace_s: float, *, then) -> None:
        """Stop the workers (Celery's ladder), run ``then`` (hand back, stop Redis), let the thread go."""
        self._stopping.set()
        stop_workers(self.procs, grace_s)
        try:
            then()
        finally:
            self._released.set()
            self._thread.join(timeout=5)


def hand_back_running_jobs(settings: Settings) -> None:
    """After this stack's workers are gone: their running jobs go back to the queue, the attempt
    refunded (a shutdown is no fault of the job), with a message unless Celery gave one back."""
    try:
        celery = make_celery(settings, settings.redis_url)
        store = JobStore(
            connect(settings.redis_url),
            finished_ttl_s=settings.finished_job_ttl_s,
            on_deliveries=lambda ids: send_deliveries(celery, settings, ids),
        )
        waiting = waiting_job_ids(store.redis, [settings.gpu_queue, settings.cpu_queue])
        handed = store.recover_lost(
            lease_s=settings.job_lease_s,
            max_attempts=settings.max_attempts,
            time_limit_s=settings.job_time_limit_s,
            requeue=lambda record: None if record.id in waiting else enqueue(celery, record),
            refund_attempt=True,
        )
    except Exception as exc:  # Redis already gone: the next start's workers recover them (jobs.lease)
        log.warning("could not hand back running jobs now (%s); the next start will", type(exc).__name__)
        return
    if handed:
        log.info("handed back to the queue: %s", ", ".join(handed))


class _StopSignals:
    """SIGTERM, SIGINT and SIGHUP all mean: stop uvicorn gracefully, then unwind the stack. uvicorn
    re-raises the signals it caught once it has stopped; these handlers then only record them, so
    the process does not die before the workers and Redis are stopped."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.server = None
        self.received: list[int] = []

    def handle(self, sig: int, frame) -> None:
        self.received.append(sig)
        if self.server is not None:
            self.server.should_exit = True

    def __enter__(self) -> _StopSignals:
        self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def serve(settings: Settings, *, host: str, port: int, workers: int, gpus: list[str] | None = None) -> int:
    import uvicorn

    from app.main import create_app

    try:
        keys = settings.tenants_by_key()
    except ValueError as exc:
        print(f"error [{ErrorCode.invalid_settings}]: {exc}", file=sys.stderr)
        return 2
    if not keys and not is_loopback(host):
        print(f"error [{ErrorCode.api_keys_required}]: refusing to listen on {host} without LORAMERGE_API_KEYS", file=sys.stderr)
        return 2
    with _StopSignals() as stops:
        try:
            with embedded_stack(settings, workers=workers, gpus=gpus) as running:
                if stops.received:
                    return 0
                app = create_app(running)
                own = {"log_config": None} if wants_own_logging(settings) else {}  # uvicorn's lines go through jobs.logs
                server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", **own))
                stops.server = server
                log.info("loramerge on http://%s:%d (docs at /docs), data in %s", host, port, running.data_dir)
                server.run()
                log.info("API stopped%s", f" on {signal.Signals(stops.received[0]).name}" if stops.received else "")
        except DataDirInUseError as exc:
            print(f"error [{exc.code}]: {exc}", file=sys.stderr)
            return 2
    return 0

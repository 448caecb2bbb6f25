"""``loramerge serve`` stopped by a signal while it merges: the API stops first, the workers get the
grace period and then hand their job back, Redis stops last, and no process of ``serve`` outlives it
(checked by process group and by every descendant's pid). A second ``serve`` on the same data folder
refuses to start; a lock left by a crash is taken over; after a restart every job finishes once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from jobs.processes import die_with_parent
from support.factories import write_adapter_folder
from support.standins.server import free_port

SLOW_SHAPES = {f"model.layers.{i}.mlp.up_proj": (512, 512) for i in range(150)}


class Serve:
    """``loramerge serve`` as a user starts it, in a session of its own so its process group is its own."""

    def __init__(self, base: Path, **env) -> None:
        self.base, self.port = base, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LORAMERGE_DATA_DIR": str(base / "data"),
            "LORAMERGE_LOCAL_ROOTS": str(base / "roots"),
            "LORAMERGE_DEVICE": "cpu",
            **env,
        }
        self.log = base / "serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Serve:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),  # a killed suite leaves no serve behind
            )  # fmt: skip
        if wait:
            deadline = time.monotonic() + 120
            while not self._ready():
                assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "serve never became ready"
                time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig: int, timeout: float = 120) -> float:
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started

    def wait_terminal(self, client: httpx.Client, job_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = client.get(f"/v1/merges/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not finished: {job}")


def survivors(pgid: int, pids: list[int]) -> list[str]:
    """Processes of a stopped ``serve``: anything left in its process group, and any of its children."""
    left = [f"pid {pid}" for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    try:
        os.killpg(pgid, 0)
        left.append(f"process group {pgid}")
    except ProcessLookupError:
        pass
    return left


SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def serve_signals(base: Path, signals=SIGNALS) -> dict:
    base = Path(base) / "serve"
    (base / "roots").mkdir(parents=True, exist_ok=True)
    slow = [str(write_adapter_folder(base / "roots" / f"slow-{i}", shapes=SLOW_SHAPES, rank=8, seed=i)) for i in range(3)]
    small = str(write_adapter_folder(base / "roots" / "small", seed=9))
    figures: dict[str, object] = {}
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "data" / "serve.lock").write_text("999999\n")  # left by a crash: no process holds it
    serve = Serve(base, LORAMERGE_SHUTDOWN_GRACE_S="2").start()
    try:
        return _signals_and_restarts(serve, base, slow, small, signals, figures)
    finally:
        if serve.proc.poll() is None:  # a failed check must not leave a serve (and its merges) behind
            serve.stop(signal.SIGTERM)


def _signals_and_restarts(serve: Serve, base: Path, slow: list[str], small: str, signals, figures: dict) -> dict:
    second = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())], env=serve.env, capture_output=True, timeout=60
    )
    assert second.returncode == 2 and b"data_dir_in_use" in second.stderr, (second.returncode, second.stderr[-500:])
    figures["second_serve"] = "refused: data_dir_in_use"
    jobs: list[str] = []
    for sig in signals:
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            for job_id in jobs:  # the previous round's jobs first (the handed-back one included): one worker
                serve.wait_terminal(client, job_id)
            running = client.post(
                "/v1/merges", json={"method": "ties", "adapters": [{"source": s} for s in slow], "output": {"rank": 8}}
            ).json()["id"]
            queued = [
                client.post(
                    "/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": small, "weight": w}]}
                ).json()["id"]
                for w in (0.5, 1.5)
            ]
            jobs += [running, *queued]
            deadline = time.monotonic() + 60
            while client.get(f"/v1/merges/{running}").json()["progress"]["stage"] != "merge":
                assert time.monotonic() < deadline, "the slow job never started merging"
                time.sleep(0.05)
        pids = [p.pid for p in serve.descendants()]
        assert len(pids) >= 3, f"expected redis-server and a worker with its pool process, found {pids}"
        stop_s = serve.stop(sig)
        left = survivors(serve.proc.pid, pids)
        assert not left, f"{signal.Signals(sig).name}: still alive after serve exited: {left}"
        assert serve.proc.returncode == 0, f"serve exited with {serve.proc.returncode}"
        figures[f"{signal.Signals(sig).name}_stop_s"] = round(stop_s, 1)
        serve.start()
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        finished = [serve.wait_terminal(client, job_id) for job_id in jobs]
    serve.stop(signal.SIGTERM)
    log = serve.log.read_text(errors="replace")
    assert [j["status"] for j in finished] == ["succeeded"] * len(jobs), [(j["id"], j["status"], j["error"]) for j in finished]
    twice = [job_id for job_id in jobs if log.count(f"job {job_id} succeeded") != 1]
    assert not twice, f"jobs recorded as succeeded more or less than once: {twice}"
    handed_back = sum(1 for j in finished if j["attempts"] == 1 and j["method"] == "ties")
    assert handed_back == len(signals), "a job interrupted by the stop lost an attempt (not handed back intact)"
    figures["jobs_finished_once"] = f"{len(jobs)}/{len(jobs)}"
    figures["running_jobs_handed_back_intact"] = f"{handed_back}/{len(signals)}"
    return figures

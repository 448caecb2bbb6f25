"""Process plumbing for ``loramerge serve`` and the test stacks: one lock per data folder, children
that die with their parent, and an ordered stop.

Why a lock: two ``serve`` on one data folder means two redis-servers on one AOF file and two worker
pools on one result store, and jobs that run twice. The lock is an ``flock`` on
``<data_dir>/serve.lock``, inherited by every child, so it is held while ``serve`` *or any process it
started* lives, and the kernel drops it when the last of them dies (a crash leaves no stale lock).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.errors import DataDirInUseError as DataDirInUseError  # re-exported: defined with the catalog

_PR_SET_PDEATHSIG = 1


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "serve.lock"
        self.fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"{self.path.parent} is in use by another `loramerge serve` (pid {holder}) or by processes it started; "
                "stop it first, or set LORAMERGE_DATA_DIR to another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # children that still hold it keep the lock, as intended
            self.fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def die_with_parent(sig: int = signal.SIGTERM, *, own_group: bool = False):
    """A ``preexec_fn``: the child gets ``sig`` when its parent dies (Linux), so even a ``kill -9``
    of ``serve`` leaves nothing behind; ``own_group`` keeps a terminal's Ctrl-C (sent to the
    foreground process group) from reaching it, so that ``serve`` decides the order of the stop."""

    def preexec() -> None:
        if own_group:
            os.setpgid(0, 0)
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def stop_processes(procs: list[subprocess.Popen], timeout_s: float = 30) -> None:
    """SIGTERM all (Celery workers finish or requeue their job), then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    _wait_or(procs, timeout_s, signal.SIGKILL)


def stop_workers(procs: list[subprocess.Popen], grace_s: float) -> None:
    """Celery's own shutdown ladder: SIGTERM (warm: finish the running job, take no new one) for
    ``grace_s``, then SIGQUIT (cold: cancel running jobs, give unacked messages back), then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    _wait_or(procs, grace_s, signal.SIGQUIT)
    _wait_or(procs, 15, signal.SIGKILL)


def _wait_or(procs: list[subprocess.Popen], timeout_s: float, then: int) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(then)
            if then == signal.SIGKILL:
                proc.wait()
        if then == signal.SIGKILL:
            _kill_group(proc.pid)


def _kill_group(pgid: int, timeout_s: float = 10) -> None:
    """What is left of a child started with ``own_group`` (a Celery worker's pool processes), and wait
    until the group is empty, so that whoever looks next (the hand-back of running jobs) finds them gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)

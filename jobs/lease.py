"""Who holds a running job, whether that holder is gone, and the fencing token of its attempt.

A running record names its worker (``host:pid``) and the worker refreshes ``updated_at`` at least
every ``lease_s / 4`` seconds. The holder is gone when its process no longer exists on this host, or
when the lease has not been refreshed for ``lease_s``. Only then may another delivery take the job
over, so a message delivered twice never runs one job twice at the same time.

A holder that was frozen (SIGSTOP, a swapped-out VM, a stuck call) may wake up after another worker
took its job over. Every write a worker makes therefore carries a :class:`Fence` (the attempt number
and the worker id of the claim) that the store checks atomically against the record; a stale fence
raises :class:`LeaseLostError` and the holder abandons its attempt without touching anything.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import LeaseLostError as LeaseLostError  # re-exported: the store and the worker import it here
from jobs.records import JobRecord, JobStatus, now


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Fence:
    """The claim an attempt holds: valid while the record is running with this attempt and worker."""

    attempt: int
    worker: str

    def holds(self, record: JobRecord) -> bool:
        return record.status == JobStatus.running and record.attempts == self.attempt and record.worker == self.worker


def attempts_spent(record: JobRecord, max_attempts: int) -> bool:
    """The one rule for "attempts used up": the current attempt was the last one allowed. The store
    (a lost holder: ``worker_lost``; a delivery after the last attempt: ``too_many_attempts``) and
    the runner (a transient error: that error's code) ask it; the code says why it ran out."""
    return record.attempts >= max_attempts


def holder_is_gone(record: JobRecord, lease_s: float) -> bool:
    if record.worker is None:
        return True
    host, _, pid = record.worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return True
    return now() - record.updated_at > lease_s


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (a killed process whose exit nobody has collected yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: existence is all we know
    return state not in ("Z", "X")

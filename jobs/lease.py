"""Who holds a running job, and whether that holder is gone.

A running record names its worker (``host:pid``) and the worker refreshes ``updated_at`` at least
every ``lease_s / 4`` seconds. The holder is gone when its process no longer exists on this host, or
when the lease has not been refreshed for ``lease_s``. Only then may another delivery take the job
over, so a message delivered twice never runs one job twice at the same time.
"""

from __future__ import annotations

import os
import socket

from jobs.records import JobRecord, now


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_is_gone(record: JobRecord, lease_s: float) -> bool:
    if record.worker is None:
        return True
    host, _, pid = record.worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return True
    return now() - record.updated_at > lease_s


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

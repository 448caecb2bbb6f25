"""``python -m worker.healthcheck``: a container healthcheck for a merge worker, from our own heartbeat
keys in Redis (jobs.heartbeat), not Celery's broadcast ping. Exit 0 when a pool process on this host
(``socket.gethostname()``, the container's) has beaten within its key's lifetime (ten beats), 1 when
none has (hung, dead, or never started), 2 when Redis cannot be asked. Light: no torch, no Celery app."""

from __future__ import annotations

import socket
import sys

import redis

from jobs.heartbeat import live_processes
from jobs.settings import Settings


def healthy(client: redis.Redis, host: str) -> bool:
    return any(beat.get("host") == host for beat in live_processes(client).values())


def main() -> int:
    settings = Settings()
    if not settings.redis_url:
        print("unhealthy: LORAMERGE_REDIS_URL is not set", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3)
    host = socket.gethostname()
    try:
        ok = healthy(client, host)
    except redis.RedisError as exc:
        print(f"unhealthy: Redis unreachable ({type(exc).__name__})", file=sys.stderr)
        return 2
    print(f"{'healthy' if ok else 'unhealthy'}: {'a' if ok else 'no'} worker process on {host} beating")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

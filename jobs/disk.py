"""Disk use of each worker node's data dir, reported through Redis so that ``/metrics`` on any API
replica shows every node's (the API may not see the workers' disks). Written by worker.retention."""

from __future__ import annotations

import json
import os
from pathlib import Path

import redis

DISK_PREFIX = "lm:disk:"
REMOVED_KEY = "lm:retention:removed"
AREAS = ("results", "staging", "hub_cache")


def tree_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder``, links not followed (a staged base model links into
    the Hub cache: counted once, there). Files that vanish while walking count 0."""
    total = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def report(client: redis.Redis, store: str, usage: dict[str, int], *, ttl_s: int) -> None:
    """Publish one data dir's usage (``AREAS`` plus ``free`` and ``total`` of its file system)."""
    client.set(f"{DISK_PREFIX}{store}", json.dumps(usage), ex=max(1, ttl_s))


def reports(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Every live report, by data dir (``host:/path``)."""
    found = {}
    for key in client.scan_iter(match=f"{DISK_PREFIX}*", count=100):
        raw = client.get(key)
        if raw is not None:
            found[key.removeprefix(DISK_PREFIX)] = json.loads(raw)
    return found


def count_removed(client: redis.Redis, area: str, count: int) -> None:
    if count:
        client.hincrby(REMOVED_KEY, area, count)


def removed_totals(client: redis.Redis) -> dict[str, int]:
    return {area: int(n) for area, n in client.hgetall(REMOVED_KEY).items()}

"""Each unit of work (one replicate's reference scores, one configuration's λ sweep, its test at λ = 1, one
named rule's merge scored on validation and test) is written as a JSON file the moment it finishes, named by
its content key (``keys.py``). A rerun loads what is there and computes only what is missing, so an interrupted
run loses one unit at most, and a result made from other adapters, data, settings or code is never reused: its
key differs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path


class Store:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.computed: list[str] = []  # keys computed by this process, in order
        self.loaded: list[str] = []  # keys found on disk
        self.seconds = 0.0  # compute time of every unit used, whether computed now or by an earlier run

    def path(self, key: str) -> Path:
        """Named by the key alone, so two rows that compute the same thing (under different names) share it."""
        return self.folder / f"{key[:32]}.json"

    def unit(self, key: str, compute: Callable[[], dict], *, label: str = "") -> dict:
        """The stored result for ``key``, or ``compute()`` written atomically (temporary file, then rename);
        ``label`` (which replicate and row first computed it) is kept in the file for whoever reads it."""
        path = self.path(key)
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("key") == key:
                self.loaded.append(key)
                self.seconds += record.get("seconds", 0.0)
                return record["value"]
        started = time.monotonic()
        value = compute()
        seconds = round(time.monotonic() - started, 2)
        self.seconds += seconds
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "label": label, "seconds": seconds, "value": value}))
        tmp.replace(path)
        self.computed.append(key)
        return value

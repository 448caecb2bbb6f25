"""Content keys: what a cached adapter or a stored result was made from, hashed, so that a change to any
input (a loader's output, a training setting, the base model, the library, the evaluation code) gives a
new key and is computed afresh instead of silently reusing a stale result."""

from __future__ import annotations

import hashlib
import inspect
import json
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def digest(value) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def data_fingerprint(texts: list[str], labels: list[int], names: list[str]) -> str:
    """Of a split as the loader and the splitter produced it: a change to either changes this."""
    return digest([names, texts, labels])


@lru_cache
def files_fingerprint(folder: str, pattern: str = "*", leave_out: tuple[str, ...] = ()) -> str:
    """Every file under ``folder`` matching ``pattern`` but those named in ``leave_out`` (relative paths):
    relative name and content."""
    h = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        if path.relative_to(root).as_posix() in leave_out:
            continue
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def source_fingerprint(*objects) -> str:
    """Of the source code of functions, classes or modules."""
    return digest([inspect.getsource(o) for o in objects])


def library_fingerprint() -> str:
    """merge_core's source: a change to any method, op or the engine can move a merge. Left out:
    ``auto_scaling.py``, the table of which rule ``scaling: "auto"`` names. No stored merge reads it (every
    unit passes a number or a named rule; the run reports ``auto`` as the unit of the rule the table names, see
    ``run.py``), so choosing a new default re-keys nothing; its test keeps it a table of literals alone."""
    return files_fingerprint(str(ROOT / "merge_core"), "*.py", leave_out=("auto_scaling.py",))

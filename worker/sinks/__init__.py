"""Sinks publish a finished result folder all at once or not at all, and return its URI."""

from __future__ import annotations

from pathlib import Path


def result_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())

"""Stream a folder as an uncompressed tar without holding a file in memory (merged models are GBs)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

BLOCK = tarfile.BLOCKSIZE
CHUNK = 1024 * 1024


def tar_folder(folder: Path, arcname: str) -> Iterator[bytes]:
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        info = tarfile.TarInfo(f"{arcname}/{path.relative_to(folder).as_posix()}")
        stat = path.stat()
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        if info.size % BLOCK:
            yield b"\0" * (BLOCK - info.size % BLOCK)
    yield b"\0" * (2 * BLOCK)

"""Extract a result tar safely: regular files and folders only, every path inside the target folder.

The service streams ``loramerge-<id>/<file>`` members (app/tar_stream.py). Whatever a server (or something
between) sends, nothing is written outside the target: absolute names, ``..``, links, devices and
duplicate names refuse the whole archive, and the target folder appears only once the tar is complete.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from loramerge_client.errors import InvalidResponseError, UnsafeArtifactError

CHUNK = 1024 * 1024


class IterReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (an HTTP body), for ``tarfile``'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._rest = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class _Counted(io.RawIOBase):
    """Counts what the tar reader takes and keeps the last two blocks, to tell a complete tar (it ends with
    two zero blocks) from one cut off between members, which ``tarfile`` reads as a shorter archive."""

    def __init__(self, stream) -> None:
        self._stream, self.total, self.tail = stream, 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.total += n
        self.tail = (self.tail + bytes(data))[-2 * tarfile.BLOCKSIZE :]
        return n

    def complete(self) -> bool:
        while self.read(CHUNK):
            pass
        return self.total % tarfile.BLOCKSIZE == 0 and len(self.tail) == 2 * tarfile.BLOCKSIZE and not self.tail.strip(b"\0")


def prepare_target(into: str | os.PathLike) -> Path:
    """``into`` must not exist, or be an empty folder (like ``loramerge merge --out``)."""
    target = Path(into)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def member_path(name: str) -> tuple[str, ...]:
    """The member's path below the archive's top folder; refuses anything that could leave the target."""
    if not name or "\0" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifactError(f"tar member {name[:200]!r}: absolute or malformed path")
    parts = tuple(p for p in PurePosixPath(name).parts if p != ".")
    if ".." in parts:
        raise UnsafeArtifactError(f"tar member {name[:200]!r}: '..' in the path")
    return parts


def extract(
    stream: io.RawIOBase | io.BufferedIOBase,
    into: str | os.PathLike,
    *,
    strip_top: bool = True,
    expect_files: list[dict] | None = None,
) -> Path:
    """Extract the tar read from ``stream`` into ``into`` (which must not exist or be empty), dropping the top
    folder every member shares, and check ``expect_files`` (the job's ``result.files``: path, size).
    All or nothing: a refused, cut-off or incomplete archive leaves ``into`` as it was."""
    target = prepare_target(into)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _extract_into(stream, staging, strip_top=strip_top)
        check_files(staging, expect_files or [])
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _extract_into(stream, staging: Path, *, strip_top: bool) -> None:
    top: str | None = None
    root = os.path.realpath(staging)
    stream = _Counted(stream)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = member_path(member.name)
                if strip_top and parts:
                    if top is None:
                        top = parts[0]
                    elif parts[0] != top:
                        raise UnsafeArtifactError(f"tar member {member.name[:200]!r} is outside the top folder {top!r}")
                    parts = parts[1:]
                if member.isdir():
                    if parts:
                        staging.joinpath(*parts).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise UnsafeArtifactError(f"tar member {member.name[:200]!r} is a link or a special file")
                if not parts:
                    raise UnsafeArtifactError(f"tar member {member.name[:200]!r} is a file where the top folder belongs")
                path = staging.joinpath(*parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                if not os.path.realpath(path.parent).startswith(root + os.sep) and os.path.realpath(path.parent) != root:
                    raise UnsafeArtifactError(f"tar member {member.name[:200]!r} resolves outside the target")
                _write(tar, member, path)
    except tarfile.TarError as exc:
        raise InvalidResponseError(f"the artifact is not a readable tar: {exc}") from None
    if not stream.complete():
        raise InvalidResponseError("the artifact is cut off: the tar does not end with its end-of-archive blocks")


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        raise UnsafeArtifactError(f"tar member {member.name[:200]!r} appears twice") from None
    source = tar.extractfile(member)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            written += len(chunk)
    if written != member.size:
        raise InvalidResponseError(f"tar member {member.name[:200]!r} is cut off ({written} of {member.size} bytes)")


def check_files(folder: Path, files: list[dict]) -> None:
    """Every file the job's result lists is there with its size (``result.files``)."""
    for item in files:
        path = folder.joinpath(*member_path(str(item.get("path", ""))))
        if not path.is_file():
            raise InvalidResponseError(f"the artifact lacks {item.get('path')!r}, which the job's result lists")
        if "size" in item and path.stat().st_size != item["size"]:
            raise InvalidResponseError(f"{item['path']!r} is {path.stat().st_size} bytes, the job's result says {item['size']}")

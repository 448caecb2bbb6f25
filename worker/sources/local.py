"""Local folders under LORAMERGE_LOCAL_ROOTS: every file the worker reads for a job is confined
after resolution, then opened race-free.

Adapters are *staged*: ``adapter_config.json`` and the weights are copied into the job's staging
folder (the weights hashed on the way: ``sha256:...`` is the pinned revision), so merge_core reads
only the copy. Base models (``output.kind == "merged_model"``, gigabytes) are staged as a folder of
links to file descriptors this process already opened and verified (``/proc/self/fd/N``): no copy, and
no window in which a swapped symlink could redirect a read.

How a file is opened (``open_confined``): its path is resolved one component at a time
(``jobs.sources.real_path``: LORAMERGE_LOCAL_SYMLINKS applies), the real path must lie under a root and
outside the data dir, then it is opened by walking down from the root's descriptor with ``O_NOFOLLOW`` on
every component (a component swapped for a symlink after the check fails the open), checked to be a
regular file, and finally its ``/proc/self/fd/N`` path is checked again. Messages name the caller's
field and source string, never bytes read from a file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from jobs.sources import LocalPathNotAllowedError, SymlinkPolicy, confine, confine_path, is_within, root_of
from merge_core.errors import (
    AdapterTooLargeError,
    BaseModelError,
    InvalidAdapterConfigError,
    PickleRefusedError,
    SourceNotFoundError,
    TooManySamplesError,
)
from merge_core.pipeline import AdapterFolder
from merge_core.spec import AdapterRef
from worker.sources import ADAPTER_FILES, PICKLE_FILE, FetchContext, source

MAX_CONFIG_BYTES = 16 << 20
MAX_BASE_MODEL_FILES = 256
BASE_INDEX_NAME = "model.safetensors.index.json"
PROC_FD = Path("/proc/self/fd")
_CHUNK = 1 << 20


class Confinement:
    """The rules one job's local reads follow (from Settings: local_roots, data_dir, local_symlinks)."""

    def __init__(self, local_roots: list[Path], data_dir: Path, symlinks: SymlinkPolicy = "within_roots") -> None:
        self.roots = [Path(root).resolve() for root in local_roots]
        self.data_dir = Path(data_dir).resolve()
        self.symlinks: SymlinkPolicy = symlinks

    @classmethod
    def from_settings(cls, settings) -> Confinement:
        return cls(settings.local_roots, settings.data_dir, settings.local_symlinks)

    def folder(self, source: str, *, field: str) -> Path:
        """The real path of a source folder (a string from the job spec)."""
        return confine(source, self.roots, field=field, data_dir=self.data_dir, symlinks=self.symlinks)

    def path(self, path: Path, *, field: str, shown: str) -> Path:
        return confine_path(path, self.roots, field=field, shown=shown, data_dir=self.data_dir, symlinks=self.symlinks)

    def holds_inode(self, info: os.stat_result) -> bool:
        """Is this file (by device and inode) also in the data dir? A hard link is another name for the same
        file, which path checks cannot see; only files with several links are looked up, a walk of the
        data dir (hard links cannot cross devices, so none when it lives on another)."""
        try:
            if os.stat(self.data_dir).st_dev != info.st_dev:
                return False
        except OSError:
            return False
        for folder, _, names in os.walk(self.data_dir):
            for name in names:
                try:
                    other = os.stat(os.path.join(folder, name), follow_symlinks=False)
                except OSError:
                    continue
                if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
                    return True
        return False

    def allows_real(self, real: Path) -> bool:
        return not is_within(real, self.data_dir) and any(is_within(real, root) for root in self.roots)


# -- adapters ---------------------------------------------------------------------------------
def stage_local(
    source: str,
    *,
    confinement: Confinement,
    into: Path,
    field: str,
    allow_pickle: bool = False,
    max_bytes: int | None = None,
    check: Callable[[], None] | None = None,
) -> AdapterFolder:
    """Copy a local adapter's files into ``into`` (created; must not hold them yet) and pin it by sha256.

    Returns ``AdapterFolder(path=into, revision="sha256:<hex of the weights>")``; merge_core then reads
    only ``into``. Raises LocalPathNotAllowedError (a path or file outside the roots, in the data dir, or
    through a refused symlink; nothing is read then), InvalidSourceError (malformed path),
    SourceNotFoundError, InvalidAdapterConfigError (config missing or too big), PickleRefusedError,
    AdapterTooLargeError (before any byte is copied)."""
    folder = confinement.folder(source, field=field)
    if not _is_dir(folder):
        raise SourceNotFoundError(f"{field}: adapter folder {source!r} does not exist", source=source)
    if not _exists(folder / ADAPTER_FILES[0]):  # merge_core's order: the config first, then the weights
        raise InvalidAdapterConfigError(f"{field}: {source!r} has no {ADAPTER_FILES[0]}", source=source)
    weights_name = ADAPTER_FILES[1]
    if not _exists(folder / weights_name):
        if not _exists(folder / PICKLE_FILE):
            raise SourceNotFoundError(f"{field}: {source!r} has no {ADAPTER_FILES[1]}", source=source)
        if not allow_pickle:
            raise PickleRefusedError(
                f"{field}: {source!r} has only a pickle {PICKLE_FILE}; the server does not load pickles", source=source
            )
        weights_name = PICKLE_FILE
    into.mkdir(parents=True, exist_ok=True)
    shown = f"{source.rstrip('/')}/{ADAPTER_FILES[0]}"
    with _closing(open_confined(folder / ADAPTER_FILES[0], confinement, field=field, shown=shown)) as fd:
        size = os.fstat(fd).st_size
        if size > MAX_CONFIG_BYTES:
            raise InvalidAdapterConfigError(
                f"{field}: {shown!r} is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit for a config", source=source
            )
        _copy(fd, into / ADAPTER_FILES[0], check)
    shown = f"{source.rstrip('/')}/{weights_name}"
    with _closing(open_confined(folder / weights_name, confinement, field=field, shown=shown)) as fd:
        size = os.fstat(fd).st_size
        if max_bytes is not None and size > max_bytes:
            raise AdapterTooLargeError(
                f"{field}: {weights_name} is {size} bytes, over the limit of {max_bytes}",
                source=source,
                size=size,
                limit=max_bytes,
            )
        digest = _copy(fd, into / weights_name, check)
    return AdapterFolder(path=into, revision=f"sha256:{digest}")


@source("local")
def fetch_local(ref: AdapterRef, *, into: Path, field: str, ctx: FetchContext) -> AdapterFolder:
    return stage_local(
        ref.source,
        confinement=ctx.confinement,
        into=into,
        field=field,
        allow_pickle=ctx.allow_pickle,
        max_bytes=ctx.max_adapter_bytes,
        check=ctx.check,
    )


# -- base models ------------------------------------------------------------------------------
class StagedBaseModel:
    """A base model folder ready for merge_core: ``path`` is what to put in ``spec.output.base_model``.

    On Linux ``path`` is a folder in staging whose entries are symlinks to ``/proc/self/fd/N`` for files
    this object holds open (checked when opened), plus a checked copy of the shard index; merge_core can
    read nothing else. Elsewhere (no /proc) the folder is checked in place and ``path`` is its real path,
    which leaves the usual check-then-use window. Close it (or use it as a context manager) after the merge."""

    def __init__(self, path: Path, fds: list[int]) -> None:
        self.path, self._fds = path, fds

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> StagedBaseModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stage_base_model(
    base_model: str, *, confinement: Confinement, into: Path, field: str = "output.base_model"
) -> StagedBaseModel:
    """Confine a base model folder and every file merge_core will read from it, and stage them.

    Read by ``merge_core.merged_model``: every regular file at the top of the folder (weights, config,
    tokenizer: copied into the output) and every file the shard index ``model.safetensors.index.json``
    names. Each is confined and opened as ``open_confined`` does (an index entry must be a relative path
    without ``..``); a top-level entry that resolves out of the roots fails the job even if it is a folder.
    Base models can be gigabytes, so nothing big is copied: ``into`` (created) holds links to the open,
    verified descriptors and a checked copy of the index. Without /proc the files are checked in place.
    Raises LocalPathNotAllowedError, InvalidSourceError, SourceNotFoundError, BaseModelError (missing
    folder, unreadable index, more than MAX_BASE_MODEL_FILES files)."""
    folder = confinement.folder(base_model, field=field)
    if not _is_dir(folder):
        raise BaseModelError(f"{field}: base model folder {base_model!r} does not exist", base_model=base_model)
    shown_base = base_model.rstrip("/")
    in_place = not PROC_FD.is_dir()
    wanted: list[str] = []
    for name in sorted(entry.name for entry in os.scandir(folder)):
        real = confinement.path(folder / name, field=field, shown=f"{shown_base}/{name}")
        if _is_regular(real):  # folders, sockets, dangling links: merge_core reads only regular files here
            wanted.append(name)
    index = None
    if BASE_INDEX_NAME in wanted:
        wanted.remove(BASE_INDEX_NAME)
        index = _read_index(folder, confinement, field=field, shown=f"{shown_base}/{BASE_INDEX_NAME}")
        wanted += sorted(set(index["weight_map"].values()) - set(wanted))
    if len(wanted) > MAX_BASE_MODEL_FILES:
        raise BaseModelError(
            f"{field}: {base_model!r} has {len(wanted)} files to read, more than {MAX_BASE_MODEL_FILES}", base_model=base_model
        )
    staged = StagedBaseModel(folder if in_place else into, [])
    try:
        if not in_place:
            into.mkdir(parents=True, exist_ok=True)
            if index is not None:
                (into / BASE_INDEX_NAME).write_text(json.dumps(index))
        for name in wanted:
            fd = open_confined(folder / name, confinement, field=field, shown=f"{shown_base}/{name}")
            if in_place:
                os.close(fd)
                continue
            staged._fds.append(fd)
            link = into / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(PROC_FD / str(fd))
    except BaseException:
        staged.close()
        raise
    return staged


def read_confined_file(source: str, confinement: Confinement, *, field: str, max_bytes: int) -> bytes:
    """The bytes of one local file named by the caller (an init job's ``.jsonl``), confined and opened
    race-free like every other local read. Raises LocalPathNotAllowedError, SourceNotFoundError,
    TooManySamplesError (over ``max_bytes``, however it grows while read)."""
    real = confine(source, confinement.roots, field=field, data_dir=confinement.data_dir, symlinks=confinement.symlinks)
    with _closing(open_confined(real, confinement, field=field, shown=source)) as fd:
        chunks, size = [], 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise TooManySamplesError(f"{field}: {source!r} is over {max_bytes} bytes", field=field)
            chunks.append(chunk)
        return b"".join(chunks)


def _read_index(folder: Path, confinement: Confinement, *, field: str, shown: str) -> dict:
    with _closing(open_confined(folder / BASE_INDEX_NAME, confinement, field=field, shown=shown)) as fd:
        if os.fstat(fd).st_size > MAX_CONFIG_BYTES:
            raise BaseModelError(f"{field}: {shown!r} is over {MAX_CONFIG_BYTES} bytes", base_model=shown)
        raw = _read_all(fd)
    try:
        index = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BaseModelError(f"{field}: {shown!r} is not valid JSON", base_model=shown) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise BaseModelError(f"{field}: {shown!r} has no weight_map of tensor name -> file", base_model=shown)
    for name in set(weight_map.values()):
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\x00" in name:
            raise LocalPathNotAllowedError(f"{field}: {shown!r} names a file outside the base model folder", field=field)
        if PurePosixPath(name) == PurePosixPath(BASE_INDEX_NAME):
            raise BaseModelError(f"{field}: {shown!r} names itself as a weights shard", base_model=shown)
    return {"metadata": {}, "weight_map": weight_map}


# -- opening one file -------------------------------------------------------------------------
def open_confined(path: Path, confinement: Confinement, *, field: str, shown: str) -> int:
    """A read-only descriptor (the caller closes it) of the regular file ``path``, only if its real path is
    allowed; see the module doc. ``shown`` names the file in messages (the caller's string, not ours).
    Raises LocalPathNotAllowedError, SourceNotFoundError (missing, unreadable or not a regular file)."""
    real = confinement.path(path, field=field, shown=shown)
    root = root_of(real, confinement.roots)
    if root is None or real == root:  # confinement.path checked it; a root itself is a folder, not a file
        raise LocalPathNotAllowedError(f"{field}: {shown!r} is outside the allowed local roots", field=field)
    fd = _open_beneath(root, real.relative_to(root).parts, field=field, shown=shown)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceNotFoundError(f"{field}: {shown!r} is not a regular file", source=shown)
        if info.st_nlink > 1 and confinement.holds_inode(info):
            raise LocalPathNotAllowedError(f"{field}: {shown!r} is a hard link to a file of the service's data dir", field=field)
        if PROC_FD.is_dir():
            opened = Path(os.readlink(PROC_FD / str(fd)))
            if opened != real or not confinement.allows_real(opened):
                raise LocalPathNotAllowedError(f"{field}: {shown!r} changed while it was being opened", field=field)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _open_beneath(root: Path, parts: tuple[str, ...], *, field: str, shown: str) -> int:
    """Open ``root/parts...`` following no symlink below ``root`` (O_NOFOLLOW on every component)."""
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise SourceNotFoundError(f"{field}: {shown!r} cannot be read (local root unavailable)", source=shown) from None
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, flags_dir, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        last = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise LocalPathNotAllowedError(
                f"{field}: {shown!r} changed into a symlink while it was being opened", field=field
            ) from None
        if exc.errno == errno.ENOENT:
            raise SourceNotFoundError(f"{field}: {shown!r} does not exist", source=shown) from None
        raise SourceNotFoundError(f"{field}: {shown!r} cannot be read ({exc.strerror})", source=shown) from None
    finally:
        os.close(fd)
    return last


def _copy(fd: int, target: Path, check: Callable[[], None] | None = None) -> str:
    """Copy from ``fd`` into a new file ``target``; return the sha256 of what was copied. ``check``
    runs every 64 MiB, so a cancel stops a multi-gigabyte copy."""
    digest = hashlib.sha256()
    copied = 0
    with open(target, "xb") as out:
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
            out.write(chunk)
            copied += len(chunk)
            if check is not None and copied % (64 * _CHUNK) == 0:
                check()
    return digest.hexdigest()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except OSError:
        return False
    return True

"""Hugging Face Hub sources and base models: pin ``revision`` to a commit sha, then download the files
of that exact commit into the shared cache (an adapter's two files; a base model's safetensors shards
and config files, one at a time). ``HF_ENDPOINT`` points the client at a mirror or stand-in. Errors are
translated by ``worker.hub.hub_errors``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import HfApi, hf_hub_download

from jobs.sources import check_base_model, check_source
from merge_core.errors import BaseModelError, PickleRefusedError, SourceNotFoundError
from merge_core.pipeline import AdapterFolder
from merge_core.spec import AdapterRef
from worker.hub import hub_errors
from worker.retention import note_cache_use
from worker.sources import ADAPTER_FILES, PICKLE_FILE, FetchContext, source
from worker.sources.local import BASE_INDEX_NAME, MAX_BASE_MODEL_FILES, MAX_CONFIG_BYTES


@source("hub")
def fetch_hub(ref: AdapterRef, *, into: Path, field: str, ctx: FetchContext) -> AdapterFolder:
    """Pin ``ref.revision`` (default ``main``) to a commit sha and download that commit's adapter files
    into the shared Hub cache (``into`` stays unused: the cache is reused across jobs)."""
    repo_id, token = ref.source, ctx.hub_token
    check_source(repo_id, ref.revision, local_roots=[], field=field)  # again here: the record may predate today's rules
    with hub_errors(repo_id):
        info = HfApi(token=token or False).model_info(repo_id, revision=ref.revision or "main")
        note_cache_use(ctx.hub_cache_dir, repo_id, info.sha)  # before the download: retention keeps it from now on
        files = {s.rfilename: s for s in info.siblings or []}
        wanted = [ADAPTER_FILES[0]]
        if ADAPTER_FILES[1] in files:
            wanted.append(ADAPTER_FILES[1])
        elif PICKLE_FILE in files and ctx.allow_pickle:
            wanted.append(PICKLE_FILE)
        elif PICKLE_FILE in files:
            raise PickleRefusedError(
                f"{repo_id}@{info.sha[:12]} has only a pickle {PICKLE_FILE}; the server does not load pickles", source=repo_id
            )
        else:
            raise SourceNotFoundError(f"{repo_id}@{info.sha[:12]} has no {ADAPTER_FILES[1]}", source=repo_id)
        paths = []
        for name in wanted:
            ctx.check()
            paths.append(hf_hub_download(repo_id, name, revision=info.sha, cache_dir=ctx.hub_cache_dir, token=token or False))
    return AdapterFolder(path=Path(paths[0]).parent, revision=info.sha)


# -- base models --------------------------------------------------------------------------------
BASE_EXTRA_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja")  # config, tokenizer, chat template
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class HubBaseModel:
    """A Hub base model staged for merge_core: ``path`` is a folder in staging holding one link per file
    fetched into the Hub cache (exactly the files merge_core may read), ``revision`` the commit sha."""

    path: Path
    revision: str
    files: list[str]


def fetch_hub_base_model(
    repo_id: str,
    revision: str | None,
    *,
    into: Path,
    ctx: FetchContext,
    progress: Callable[[str, int, int], None] | None = None,
    field: str = "output.base_model",
    endpoint: str | None = None,
) -> HubBaseModel:
    """Pin ``revision`` (default ``main``) to a commit sha, then fetch that commit's safetensors weights
    (the shards ``model.safetensors.index.json`` names, or every top-level ``*.safetensors``) and its
    config and tokenizer files into the shared Hub cache, one file at a time: ``hf_hub_download`` streams
    each to disk, nothing is held whole in memory. ``ctx.check()`` runs before every file (a cancel or a
    lost lease stops between files) and ``progress("fetch_base_model", done, total)`` after each.

    Raises BaseModelError (``invalid_base_model``: repo, revision or a named file missing, no safetensors
    weights, a bad index, too many files), SourceForbiddenError (gated, 401/403), SourceUnavailableError
    (5xx, 429, unreachable: retried), InvalidSourceError (the ID or revision is malformed)."""
    check_base_model(repo_id, revision, local_roots=[], field=field)  # again here: the record may predate today's rules
    token = ctx.hub_token or False

    def missing(message: str) -> BaseModelError:
        return BaseModelError(f"{field}: {message}", base_model=repo_id)

    def download(name: str) -> Path:
        ctx.check()
        with hub_errors(repo_id, missing=missing, what=f"base model file {name!r}"):
            return Path(hf_hub_download(repo_id, name, revision=sha, cache_dir=ctx.hub_cache_dir, token=token, endpoint=endpoint))

    ctx.check()
    with hub_errors(repo_id, missing=missing, what="base model file"):
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision or "main")
    sha = info.sha
    note_cache_use(ctx.hub_cache_dir, repo_id, sha)
    shown = f"{repo_id}@{sha[:12]}"
    names = {s.rfilename for s in info.siblings or []}
    top = sorted(name for name in names if "/" not in name)
    extras = [
        name
        for name in top
        if name.endswith(BASE_EXTRA_SUFFIXES) and not name.endswith(".index.json") and name != ADAPTER_FILES[0]
    ]
    if BASE_INDEX_NAME in names:
        index_path = download(BASE_INDEX_NAME)
        shards = _index_shards(index_path, names, field=field, shown=shown, repo_id=repo_id)
        fetched = [BASE_INDEX_NAME]
    else:
        shards = [name for name in top if name.endswith(".safetensors")]
        fetched = []
    if not shards:
        pickles = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
        why = f" (only pickle weights such as {pickles[0]!r}, which the server does not load)" if pickles else ""
        raise BaseModelError(f"{field}: {shown} has no .safetensors weights{why}", base_model=repo_id)
    wanted = extras + shards
    if len(wanted) + len(fetched) > MAX_BASE_MODEL_FILES:
        raise BaseModelError(
            f"{field}: {shown} has {len(wanted) + len(fetched)} files to fetch, more than {MAX_BASE_MODEL_FILES}",
            base_model=repo_id,
        )
    into.mkdir(parents=True, exist_ok=True)
    total = len(wanted) + len(fetched)
    if fetched:
        _link(into, BASE_INDEX_NAME, index_path)
        if progress is not None:
            progress("fetch_base_model", 1, total)
    for name in wanted:
        _link(into, name, download(name))
        fetched.append(name)
        if progress is not None:
            progress("fetch_base_model", len(fetched), total)
    return HubBaseModel(path=into, revision=sha, files=fetched)


def _index_shards(index_path: Path, names: set[str], *, field: str, shown: str, repo_id: str) -> list[str]:
    """The shards the index names: relative paths without ``..``, each in the commit's file list."""
    if index_path.stat().st_size > MAX_CONFIG_BYTES:
        raise BaseModelError(f"{field}: {shown}'s {BASE_INDEX_NAME} is over {MAX_CONFIG_BYTES} bytes", base_model=repo_id)
    try:
        index = json.loads(index_path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BaseModelError(f"{field}: {shown}'s {BASE_INDEX_NAME} is not valid JSON", base_model=repo_id) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise BaseModelError(f"{field}: {shown}'s {BASE_INDEX_NAME} has no weight_map of tensor name -> file", base_model=repo_id)
    shards = sorted(set(weight_map.values()))
    for name in shards:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\x00" in name or not name.endswith(".safetensors"):
            raise BaseModelError(
                f"{field}: {shown}'s {BASE_INDEX_NAME} names {name!r}, not a .safetensors file of the repo", base_model=repo_id
            )
        if name not in names:
            raise BaseModelError(
                f"{field}: {shown}'s {BASE_INDEX_NAME} names {name!r}, which the commit does not have", base_model=repo_id
            )
    return shards


def _link(folder: Path, name: str, target: Path) -> None:
    link = folder / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.absolute())  # the cache may sit under a relative data dir

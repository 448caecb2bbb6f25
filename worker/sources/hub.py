"""Hugging Face Hub sources: pin ``revision`` to a commit sha, then download the adapter files of
that exact commit into the shared cache. ``HF_ENDPOINT`` points the client at a mirror or stand-in.
Errors are translated by ``worker.hub.hub_errors``."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download

from jobs.sources import check_source
from merge_core.errors import PickleRefusedError, SourceNotFoundError
from merge_core.pipeline import AdapterFolder
from merge_core.spec import AdapterRef
from worker.hub import hub_errors
from worker.sources import ADAPTER_FILES, PICKLE_FILE, FetchContext, source


@source("hub")
def fetch_hub(ref: AdapterRef, *, into: Path, field: str, ctx: FetchContext) -> AdapterFolder:
    """Pin ``ref.revision`` (default ``main``) to a commit sha and download that commit's adapter files
    into the shared Hub cache (``into`` stays unused: the cache is reused across jobs)."""
    repo_id, token = ref.source, ctx.hub_token
    check_source(repo_id, ref.revision, local_roots=[], field=field)  # again here: the record may predate today's rules
    with hub_errors(repo_id):
        info = HfApi(token=token or False).model_info(repo_id, revision=ref.revision or "main")
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

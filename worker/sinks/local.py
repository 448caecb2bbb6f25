"""The local result store: ``<data_dir>/results/<job id>`` (jobs.results), published with one rename."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jobs.results import local_result_folder
from worker.errors import DestinationError
from worker.sinks import PublishContext, Published, listing, sink


@sink("local")
def publish_local(folder: Path, *, ctx: PublishContext) -> Published:
    final = local_result_folder(ctx.results_dir, ctx.job_id)
    try:
        ctx.results_dir.mkdir(parents=True, exist_ok=True)
        if final.exists() or final.is_symlink():
            # an earlier attempt that published and died before recording it, or something planted there:
            # this attempt holds the job (fenced before publish), so its own result replaces it
            stale = folder.with_name(folder.name + ".replaced")
            os.replace(final, stale)
            os.replace(folder, final)
            if stale.is_symlink() or not stale.is_dir():
                stale.unlink()
            else:
                shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(folder, final)
    except OSError as exc:
        raise DestinationError(f"could not write the local result store: {exc.strerror or exc}") from None
    return Published(uri=final.resolve().as_uri(), files=listing(final))

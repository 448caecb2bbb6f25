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
        if final.exists():  # an earlier delivery of this job already published it
            shutil.rmtree(folder, ignore_errors=True)
        else:
            os.replace(folder, final)
    except OSError as exc:
        raise DestinationError(f"could not write the local result store: {exc.strerror or exc}") from None
    return Published(uri=final.resolve().as_uri(), files=listing(final))

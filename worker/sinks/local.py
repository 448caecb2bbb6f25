"""The local result store: ``<data_dir>/results/<job id>``, published with one rename."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from worker.errors import DestinationError


def publish_local(folder: Path, *, results_dir: Path, job_id: str) -> str:
    final = results_dir / job_id
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an earlier delivery of this job already published it
            shutil.rmtree(folder, ignore_errors=True)
        else:
            os.replace(folder, final)
    except OSError as exc:
        raise DestinationError(f"could not write the local result store: {exc.strerror or exc}") from None
    return final.resolve().as_uri()

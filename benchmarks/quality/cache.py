"""Writing a cache entry (a trained adapter's folder) so that a reader never sees half of one."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path


def publish(folder: Path, write: Callable[[Path], None]) -> Path:
    """``write`` fills ``<folder>.tmp``, which is then renamed to ``folder``: an interrupted run leaves no
    ``folder`` behind, so the next run trains again. A ``.tmp`` left by such a run is removed first, or its
    stale files would be published with the new ones.
    """
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    tmp.rename(folder)
    return folder

"""An attempt's progress writes: throttled within a stage, never across a stage change (a dropped
``publish`` left jobs showing ``write`` while they uploaded, and no ``job.stage`` event for it)."""

from __future__ import annotations

from jobs.records import JobRecord
from jobs.settings import Settings
from worker.attempt import Attempt


class Recorder:
    def __init__(self) -> None:
        self.written: list[tuple[str, int, int]] = []

    def set_progress(self, job_id, fence, progress) -> None:
        self.written.append((progress.stage, progress.done, progress.total))


def test_a_new_stage_is_always_written_the_same_stage_throttled(tmp_path):
    store = Recorder()
    settings = Settings(data_dir=tmp_path / "data", progress_interval_s=3600)
    attempt = Attempt(store, JobRecord(tenant="t", spec={}, queue="cpu"), settings, tmp_path)
    attempt.progress("forward", 0, 4)
    attempt.progress("forward", 1, 4)  # within the interval, same stage: dropped
    attempt.progress("forward", 4, 4)  # a stage's end is always written
    attempt.progress("solve", 1, 8)  # a new stage right after: written
    attempt.progress("solve", 2, 8)
    attempt.progress("publish", 0, 1)
    assert store.written == [("forward", 0, 4), ("forward", 4, 4), ("solve", 1, 8), ("publish", 0, 1)]

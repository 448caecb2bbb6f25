"""Run one job: claim it, fetch its sources, merge with merge_core, publish, record the outcome.

Safe to run twice for one job (a redelivered message after a worker died): the claim is an atomic
transition, the merge writes to a per-job staging folder, publishing is all-or-nothing, and a job
already published or finished is not redone.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from pathlib import Path

import redis

from jobs.lease import holder_is_gone, worker_id
from jobs.records import JobError, JobProgress, JobRecord, JobResult, JobStatus, PinnedSource, ResultFile, now
from jobs.secrets import TokenBox
from jobs.settings import Settings
from jobs.sources import destination_kind, source_kind
from jobs.store import JobStore
from merge_core.errors import MergeCancelledError, MergeError
from merge_core.pipeline import ResolvedSource, run_merge
from merge_core.spec import AdapterRef, MergeSpec
from worker.errors import TransientError
from worker.sinks import result_files
from worker.sinks.hub import publish_hub
from worker.sinks.local import publish_local
from worker.sinks.s3 import publish_s3
from worker.sources.hub import resolve_hub
from worker.sources.local import resolve_local
from worker.sources.s3 import resolve_s3

log = logging.getLogger("loramerge.worker")
PROGRESS_EVERY_S = 0.5


class JobRunner:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.tokens = TokenBox.from_settings(settings)

    def claim(self, job_id: str) -> JobRecord | None:
        """queued -> running, or take over a running job whose worker is gone (jobs.lease).
        None: nothing to do (finished, cancelled, or running under a live worker)."""
        me = worker_id()

        def mutate(record: JobRecord) -> bool:
            if record.status == JobStatus.running and not holder_is_gone(record, self.settings.job_lease_s):
                return False
            if record.status not in (JobStatus.queued, JobStatus.running):
                return False
            record.status = JobStatus.running
            record.attempts += 1
            record.worker = me
            record.started_at = record.started_at or now()
            record.progress = JobProgress(stage="fetch", done=0, total=len(record.spec.get("adapters", [])))
            return True

        record = self.store.update(job_id, mutate)
        if record is None or record.status != JobStatus.running or record.worker != me:
            state = "unknown or expired" if record is None else f"{record.status.value} ({record.worker or 'no worker'})"
            log.info("job %s: %s, not run by this delivery", job_id, state)
            return None
        if record.attempts > self.settings.max_attempts:
            self.fail(
                job_id, "too_many_attempts", f"gave up after {record.attempts - 1} attempts (worker lost or transient errors)"
            )
            return None
        return record

    def run(self, job_id: str) -> JobStatus | None:
        record = self.claim(job_id)
        if record is None:
            return None
        staging = self.settings.staging_dir / job_id / str(record.attempts)
        for stale in staging.parent.glob("*"):  # leftovers of earlier attempts whose worker died
            if stale.name.isdigit() and int(stale.name) < record.attempts:
                shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        lease = self._keep_lease(job_id, record.worker)
        try:
            status = self._execute(record, staging)
        except MergeCancelledError:
            status = self._finish(job_id, JobStatus.cancelled, progress=JobProgress(stage="cancelled"))
        except TransientError:
            raise  # the task decides: retry with backoff, or fail once attempts are spent
        except MergeError as exc:
            status = self.fail(job_id, exc.code, exc.message)
        except OSError as exc:  # our own disk: staging, result store, Hub cache
            code = "storage_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "storage_error"
            status = self.fail(job_id, code, f"the worker could not write its files: {exc.strerror or exc}")
        finally:
            lease.set()
            shutil.rmtree(staging, ignore_errors=True)
            _remove_if_empty(staging.parent)
        if status is not None:
            self.store.observe_duration(status, time.monotonic() - started)
        return status

    def fail(self, job_id: str, code: str, message: str) -> JobStatus | None:
        log.warning("job %s failed: %s", job_id, code)
        return self._finish(job_id, JobStatus.failed, error=JobError(code=code, message=message))

    def _finish(self, job_id: str, status: JobStatus, **changes) -> JobStatus | None:
        _, moved = self.store.transition(job_id, status, allowed_from={JobStatus.queued, JobStatus.running}, **changes)
        return status if moved else None

    # -- the job ------------------------------------------------------------------------------
    def _execute(self, record: JobRecord, staging: Path) -> JobStatus | None:
        spec = MergeSpec.model_validate(record.spec)
        token = self._token(record)
        pinned: list[PinnedSource] = []

        def resolve(ref: AdapterRef) -> ResolvedSource:
            resolved = self._resolve(ref, len(pinned), token, staging)
            pinned.append(
                PinnedSource(source=ref.source, requested_revision=ref.revision, revision=resolved.revision, weight=ref.weight)
            )
            self.store.update(record.id, lambda r: _set_sources(r, pinned))
            return resolved

        outcome = run_merge(
            spec,
            staging / "out",
            resolve=resolve,
            allow_pickle=self.settings.allow_pickle,
            max_adapter_bytes=self.settings.max_adapter_bytes,
            device=self.settings.device,
            progress=self._progress(record.id),
            should_cancel=self._cancel_check(record.id),
        )
        self._set_progress(record.id, "publish", 0, 1)
        uri = self._publish(spec, record, outcome.out_dir, token)
        folder = self.settings.results_dir / record.id if uri.startswith("file://") else outcome.out_dir
        files = [ResultFile(path=p.relative_to(folder).as_posix(), size=p.stat().st_size) for p in result_files(folder)]
        result = JobResult(
            uri=uri,
            files=files,
            summary=outcome.summary,
            artifact_url=f"/v1/merges/{record.id}/artifact" if uri.startswith("file://") else None,
        )
        log.info("job %s succeeded in %.1f s -> %s", record.id, outcome.elapsed_s, uri)
        return self._finish(record.id, JobStatus.succeeded, result=result, progress=JobProgress(stage="done", done=1, total=1))

    def _resolve(self, ref: AdapterRef, index: int, token: str | None, staging: Path) -> ResolvedSource:
        field = f"adapters[{index}].source"
        kind = source_kind(ref.source)
        if kind == "local":
            return resolve_local(ref.source, local_roots=self.settings.local_roots, field=field)
        if kind == "s3":
            return resolve_s3(
                ref.source,
                endpoint_url=self.settings.s3_endpoint_url,
                into=staging / "sources" / str(index),
                allow_pickle=self.settings.allow_pickle,
                field=field,
            )
        return resolve_hub(
            ref.source, ref.revision, token=token, cache_dir=self.settings.hub_cache_dir, allow_pickle=self.settings.allow_pickle
        )

    def _publish(self, spec: MergeSpec, record: JobRecord, folder: Path, token: str | None) -> str:
        kind = destination_kind(spec.output.destination)
        if kind == "s3":
            return publish_s3(folder, uri=spec.output.destination, job_id=record.id, endpoint_url=self.settings.s3_endpoint_url)
        if kind == "hub":
            message = f"loramerge job {record.id}: {spec.method} of {len(spec.adapters)} adapters"
            return publish_hub(
                folder,
                repo_id=spec.output.destination[len("hf://") :],
                private=spec.output.private,
                token=token,
                commit_message=message,
            )
        return publish_local(folder, results_dir=self.settings.results_dir, job_id=record.id)

    def _token(self, record: JobRecord) -> str | None:
        if record.hub_token_enc:
            return self.tokens.open(record.hub_token_enc)
        return self.settings.hub_token.get_secret_value() if self.settings.hub_token else None

    def _keep_lease(self, job_id: str, me: str) -> threading.Event:
        """Refresh ``updated_at`` while the job runs, also through long downloads with no progress."""
        stop = threading.Event()

        def touch(record: JobRecord) -> bool:
            return record.status == JobStatus.running and record.worker == me

        def keep() -> None:
            while not stop.wait(self.settings.job_lease_s / 4):
                try:
                    self.store.update(job_id, touch, patient=False)
                except redis.RedisError:
                    pass

        threading.Thread(target=keep, name=f"lease-{job_id[:8]}", daemon=True).start()
        return stop

    # -- progress and cancel, throttled: the merge calls these once per module batch ----------
    def _progress(self, job_id: str):
        last = [0.0]

        def report(stage: str, done: int, total: int) -> None:
            moment = time.monotonic()
            if done >= total or moment - last[0] >= PROGRESS_EVERY_S:
                last[0] = moment
                self._set_progress(job_id, stage, done, total)

        return report

    def _set_progress(self, job_id: str, stage: str, done: int, total: int) -> None:
        """Best effort: a Redis outage must not abort a merge over a progress line."""

        def mutate(record: JobRecord) -> bool:
            if record.status != JobStatus.running:
                return False
            record.progress = JobProgress(stage=stage, done=done, total=total)
            return True

        try:
            self.store.update(job_id, mutate, patient=False)
        except redis.RedisError:
            log.warning("job %s: progress not recorded (Redis unavailable)", job_id)

    def _cancel_check(self, job_id: str):
        last, answer = [0.0], [False]

        def should_cancel() -> bool:
            moment = time.monotonic()
            if not answer[0] and moment - last[0] >= PROGRESS_EVERY_S / 2:
                last[0] = moment
                try:
                    record = self.store.get(job_id, patient=False)
                except redis.RedisError:
                    return False  # unknown during an outage: keep merging, ask again later
                answer[0] = record is None or record.cancel_requested or record.status != JobStatus.running
            return answer[0]

        return should_cancel


def _set_sources(record: JobRecord, pinned: list[PinnedSource]) -> bool:
    record.sources = list(pinned)
    return True


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass

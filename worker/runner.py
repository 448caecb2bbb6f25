"""Run one job: claim it, fetch its sources, merge with merge_core, publish, record the outcome.

Safe to run twice for one job (a redelivered message after a worker died): the claim is an atomic
transition, the merge writes to a per-attempt staging folder, publishing is all-or-nothing, and a
job already published or finished is not redone. Every write goes through the attempt's fence
(worker.attempt), so an attempt that lost its job to another worker abandons it untouched.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
from contextlib import ExitStack
from pathlib import Path

import redis
from celery.exceptions import SoftTimeLimitExceeded

from jobs.errors import ErrorCode
from jobs.lease import LeaseLostError, attempts_spent, worker_id
from jobs.logs import add_job_context, job_context
from jobs.records import JobError, JobProgress, JobRecord, JobResult, JobStatus, PinnedSource, now
from jobs.request import InitRequest, MergeRequest
from jobs.secrets import TokenBox
from jobs.settings import Settings
from jobs.sources import check_base_model
from jobs.store import JobStore
from merge_core.errors import MergeCancelledError, MergeError
from merge_core.pipeline import AdapterFolder, run_merge
from merge_core.spec import MergeSpec
from worker.attempt import Attempt
from worker.device import process_device
from worker.errors import TransientError
from worker.sinks import PublishContext, publish
from worker.sources import FetchContext, fetch
from worker.sources.hub import fetch_hub_base_model
from worker.sources.local import Confinement, read_confined_file, stage_base_model

log = logging.getLogger("loramerge.worker")


class RetryLater(Exception):
    """A transient error: the job is back in ``queued``; the task re-sends it after ``delay_s``."""

    def __init__(self, delay_s: float, cause: TransientError) -> None:
        super().__init__(cause.message)
        self.delay_s, self.cause = delay_s, cause


class JobRunner:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.tokens = TokenBox.from_settings(settings)
        self.confinement = Confinement.from_settings(settings)

    def run(self, job_id: str) -> JobStatus | None:
        """The job's outcome, or None when this delivery had nothing to do or lost the job.
        Raises RetryLater after a transient error with attempts left. Every line logged meanwhile
        carries the job's id, and once claimed its tenant and attempt (jobs.logs)."""
        with job_context(job_id=job_id):
            return self._run(job_id)

    def _run(self, job_id: str) -> JobStatus | None:
        record = self.store.claim(
            job_id, worker_id(), lease_s=self.settings.job_lease_s, device=process_device(self.settings.device)
        )
        if record is None:
            current = self.store.get(job_id)
            state = "unknown or expired" if current is None else f"{current.status.value} ({current.worker or 'no worker'})"
            if current is not None:
                add_job_context(tenant=current.tenant, attempt=current.attempts)
            log.info("job %s: %s, not run by this delivery", job_id, state)
            return None
        add_job_context(tenant=record.tenant, attempt=record.attempts)
        staging = self.settings.staging_dir / job_id / str(record.attempts)
        for stale in staging.parent.glob("*"):  # leftovers of earlier attempts whose worker died
            if stale.name.isdigit() and int(stale.name) < record.attempts:
                shutil.rmtree(stale, ignore_errors=True)
        attempt = Attempt(self.store, record, self.settings, staging)
        try:
            with attempt:
                return self._attempt(record, attempt, staging)
        except LeaseLostError as exc:
            log.warning("%s; attempt abandoned, nothing recorded or published", exc)
            return None
        finally:
            attempt.discard_staging()  # also after a requeue or an abandoned attempt

    def _attempt(self, record: JobRecord, attempt: Attempt, staging: Path) -> JobStatus:
        if attempts_spent(record, self.settings.max_attempts + 1):  # claimed once more than allowed
            return self._fail(
                attempt,
                ErrorCode.too_many_attempts,
                f"gave up after {record.attempts - 1} attempts (worker lost or transient errors)",
            )
        try:
            return self._execute(record, attempt, staging)
        except MergeCancelledError:
            return attempt.finish(JobStatus.cancelled, progress=JobProgress(stage="cancelled"))
        except TransientError as exc:  # retryable: a source or destination said "later"
            if attempts_spent(record, self.settings.max_attempts):
                return self._fail(attempt, exc.code, f"{exc.message} (gave up after {record.attempts} attempts)")
            delay = self.settings.retry_backoff_s * 2 ** (record.attempts - 1)
            attempt.requeue(progress=JobProgress(stage=f"retrying in {delay:.0f} s: {exc.code}"), not_before=now() + delay)
            log.warning("job %s: transient %s, retry %d in %.1f s", record.id, exc.code, record.attempts, delay)
            raise RetryLater(delay, exc) from None
        except MergeError as exc:
            return self._fail(attempt, exc.code, _unstaged(exc.message, staging))
        except SoftTimeLimitExceeded:
            limit = self.settings.job_soft_time_limit_s
            return self._fail(
                attempt, ErrorCode.time_limit_exceeded, f"the job ran past {limit} s (LORAMERGE_JOB_SOFT_TIME_LIMIT_S)"
            )
        except OSError as exc:  # our own disk: staging, result store, Hub cache
            code = ErrorCode.storage_full if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ErrorCode.storage_error
            return self._fail(attempt, code, f"the worker could not write its files: {exc.strerror or exc}")
        except (LeaseLostError, redis.RedisError):
            raise  # a Redis outage past the workers' grace: no record can be written; the lease sweep requeues it
        except Exception as exc:
            log.exception("job %s: unexpected error", record.id)
            return self._fail(
                attempt, ErrorCode.internal_error, f"unexpected {type(exc).__name__}; the worker log has the details"
            )

    def _fail(self, attempt: Attempt, code: str, message: str) -> JobStatus:
        log.warning("job %s failed: %s", attempt.job_id, code)
        return attempt.finish(JobStatus.failed, error=JobError(code=code, message=message))

    # -- the pipeline: fetch every source, then merge, then publish -------------------------------
    def _execute(self, record: JobRecord, attempt: Attempt, staging: Path) -> JobStatus:
        if record.kind == "init":
            return self._execute_init(record, attempt, staging)
        request = MergeRequest.model_validate(record.spec)
        spec = request.spec
        token = self._token(record)
        ctx = self._fetch_context(attempt, token)
        folders = self._fetch(spec, attempt, staging, ctx)
        with ExitStack() as held:
            base_model_dir = None
            if spec.output.base_model is not None:  # any output kind: DoRA adapters and trained biases read it too
                base_model_dir, spec = self._stage_base_model(spec, attempt, staging / "base_model", ctx, held)
            attempt.stage = "merge"
            outcome = run_merge(
                spec,
                staging / "out",
                folders=folders,
                allow_pickle=self.settings.allow_pickle,
                max_adapter_bytes=self.settings.max_adapter_bytes,
                device=process_device(self.settings.device),
                progress=attempt.progress,
                should_cancel=attempt.should_cancel,
                base_model_dir=base_model_dir,
                batch_elements=self.settings.merge_batch_elements,
                on_oom=self.settings.oom_fallback,
            )
        return self._publish(record, attempt, request.output, token, outcome, f"{spec.method} of {len(spec.adapters)} adapters")

    # -- an init job (OSRM): stage the base model, read the task files, run it forward, publish -----------
    def _execute_init(self, record: JobRecord, attempt: Attempt, staging: Path) -> JobStatus:
        from merge_core.osrm import MAX_JSONL_BYTES, parse_jsonl, run_init

        request = InitRequest.model_validate(record.spec)
        spec = request.spec
        token = self._token(record)
        ctx = self._fetch_context(attempt, token)
        files: dict[str, list] = {}
        for i, task in enumerate(spec.tasks):
            if task.file is not None:
                ctx.check()
                data = read_confined_file(task.file, self.confinement, field=f"tasks[{i}].file", max_bytes=MAX_JSONL_BYTES)
                files[task.name] = parse_jsonl(data, task, spec.params.samples_per_task)
        with ExitStack() as held:
            base_dir, revision = self._stage_model(
                spec.base_model,
                spec.base_model_revision,
                attempt,
                staging / "base_model",
                ctx,
                held,
                field="base_model",
                revision_field="base_model_revision",
            )
            if revision is not None:
                spec = spec.model_copy(update={"base_model_revision": revision})
            attempt.stage = "init"
            outcome = run_init(
                spec,
                staging / "out",
                base_model_dir=base_dir,
                files=files,
                device=process_device(self.settings.device),
                progress=attempt.progress,
                should_cancel=attempt.should_cancel,
            )
        return self._publish(record, attempt, request.output, token, outcome, f"OSRM initialisation of {len(spec.tasks)} tasks")

    def _publish(self, record: JobRecord, attempt: Attempt, output, token: str | None, outcome, what: str) -> JobStatus:
        """Publish the attempt's output folder all at once, then record the job as succeeded."""
        attempt.before_publish()
        published = publish(
            outcome.out_dir,
            ctx=PublishContext(
                job_id=record.id,
                destination=output.destination,
                private=output.private,
                hub_token=token,
                results_dir=self.settings.results_dir,
                s3_endpoint_url=self.settings.s3_endpoint_url,
                commit_message=f"loramerge job {record.id}: {what}",
            ),
        )
        result = JobResult(uri=published.uri, files=published.files, summary=outcome.summary)
        # "job <id> succeeded" is what operators and the fault suite grep for: keep it first
        log.info("job %s succeeded in %.1f s -> %s (%s)", record.id, outcome.elapsed_s, published.uri, what)
        return attempt.finish(JobStatus.succeeded, result=result, progress=JobProgress(stage="done", done=1, total=1))

    def _fetch_context(self, attempt: Attempt, token: str | None) -> FetchContext:
        def check() -> None:
            if attempt.should_cancel():
                raise MergeCancelledError("cancelled while fetching sources", stage="fetch")

        return FetchContext(
            allow_pickle=self.settings.allow_pickle,
            max_adapter_bytes=self.settings.max_adapter_bytes,
            hub_token=token,
            hub_cache_dir=self.settings.hub_cache_dir,
            s3_endpoint_url=self.settings.s3_endpoint_url,
            confinement=self.confinement,
            check=check,
        )

    def _fetch(self, spec: MergeSpec, attempt: Attempt, staging: Path, ctx: FetchContext) -> list[AdapterFolder]:
        """Every source into staging (or the Hub cache) before anything is merged, pinned and recorded
        one by one; a cancel or a lost lease stops between files."""
        folders: list[AdapterFolder] = []
        pinned: list[PinnedSource] = []
        for index, ref in enumerate(spec.adapters):
            ctx.check()
            folder = fetch(ref, into=staging / "sources" / str(index), field=f"adapters[{index}].source", ctx=ctx)
            folders.append(folder)
            pinned.append(
                PinnedSource(source=ref.source, requested_revision=ref.revision, revision=folder.revision, weight=ref.weight)
            )
            attempt.set_sources(pinned)
            attempt.progress("fetch", index + 1, len(spec.adapters))
        return folders

    def _stage_base_model(
        self, spec: MergeSpec, attempt: Attempt, into: Path, ctx: FetchContext, held: ExitStack
    ) -> tuple[Path, MergeSpec]:
        """Stage ``output.base_model`` for merge_core and record it (``JobRecord.base_model``).

        A Hub ID is pinned to a commit sha and its files fetched one at a time into the Hub cache; the
        spec handed to merge_core then carries that sha as ``output.base_model_revision`` (so
        merge_spec.json and the model card name the exact commit). A local folder is confined again here
        (the record may predate these roots) and staged as links to open, checked descriptors."""
        output = spec.output
        path, revision = self._stage_model(output.base_model, output.base_model_revision, attempt, into, ctx, held)
        if revision is None:
            return path, spec
        pinned = output.model_copy(update={"base_model_revision": revision})
        return path, spec.model_copy(update={"output": pinned})

    def _stage_model(
        self,
        base_model: str,
        revision: str | None,
        attempt: Attempt,
        into: Path,
        ctx: FetchContext,
        held: ExitStack,
        *,
        field: str = "output.base_model",
        revision_field: str = "output.base_model_revision",
    ) -> tuple[Path, str | None]:
        """Stage a base model (merges' ``output.base_model``, an init job's ``base_model``) and record it;
        returns its folder and, from the Hub, the commit sha it was pinned to."""
        confinement = self.confinement
        kind = check_base_model(
            base_model,
            revision,
            local_roots=confinement.roots,
            field=field,
            revision_field=revision_field,
            data_dir=confinement.data_dir,
            symlinks=confinement.symlinks,
        )
        attempt.progress("fetch_base_model", 0, 1)
        if kind == "hub":
            fetched = fetch_hub_base_model(base_model, revision, into=into, ctx=ctx, progress=attempt.progress, field=field)
            attempt.set_base_model(PinnedSource(source=base_model, requested_revision=revision, revision=fetched.revision))
            return fetched.path, fetched.revision
        ctx.check()
        staged = held.enter_context(stage_base_model(base_model, confinement=confinement, into=into, field=field))
        attempt.set_base_model(PinnedSource(source=base_model))
        attempt.progress("fetch_base_model", 1, 1)
        return staged.path, None

    def _token(self, record: JobRecord) -> str | None:
        if record.hub_token_enc:
            return self.tokens.open(record.hub_token_enc)
        return self.settings.hub_token.get_secret_value() if self.settings.hub_token else None


def _unstaged(message: str, staging: Path) -> str:
    """Name staged copies by the adapter they came from, not by the server's staging path."""
    message = re.sub(re.escape(str(staging / "sources")) + r"/(\d+)", lambda m: f"adapters[{m[1]}]", message)
    return message.replace(str(staging), "<staging>")

"""``Client``: the HTTP API from Python, synchronous, on httpx.

Every call answers a :class:`Job` (or raises the typed error of the answer's ``error.code``); 429 and 503
are retried after ``Retry-After`` (bounded), as are connection failures: every call is safe to repeat,
``submit`` and ``submit_init`` because each sends one ``Idempotency-Key`` for all its tries. Both kinds of
job, merges (``submit``) and OSRM initialisations (``submit_init``), are read, waited for, cancelled,
followed and downloaded by the same methods: the service answers a job's id under either path.
"""

from __future__ import annotations

import email.utils
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from loramerge_client.artifact import IterReader, extract
from loramerge_client.errors import (
    ConnectionFailedError,
    InvalidResponseError,
    JobCancelledError,
    LoramergeError,
    WaitTimeoutError,
    error_for,
)
from loramerge_client.sse import Event, parse

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_SERVER = "http://127.0.0.1:8000"
COLLECTIONS = {"merge": "/v1/merges", "init": "/v1/inits"}  # a job kind and the path its jobs are listed under


class Job:
    """A job as the API shows it. ``job.data`` is the whole JSON document; the usual fields are attributes,
    and ``job["spec"]`` reads any other."""

    def __init__(self, data: dict[str, Any], *, replayed: bool = False) -> None:
        self.data = data
        self.replayed = replayed  # an earlier submit with the same Idempotency-Key made this job

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    id = property(lambda self: self.data["id"])
    kind = property(lambda self: self.data.get("kind") or "merge", doc="merge, or init (an OSRM initialisation)")
    status = property(lambda self: self.data["status"])
    method = property(lambda self: self.data.get("method"))
    progress = property(lambda self: self.data.get("progress") or {})
    error = property(lambda self: self.data.get("error"))
    result = property(lambda self: self.data.get("result"))
    sources = property(lambda self: self.data.get("sources") or [])
    purged = property(lambda self: bool(self.data.get("purged")), doc="its stored result was deleted (tenant or retention)")
    base_model = property(
        lambda self: self.data.get("base_model"),
        doc="The staged base model (source, requested_revision, revision: the Hub commit sha), None until staged",
    )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def artifact_url(self) -> str | None:
        return (self.result or {}).get("artifact_url")

    def raise_for_status(self) -> Job:
        """Raise the typed error of a failed job (``JobCancelledError`` for a cancelled one), with ``job`` set."""
        if self.status == "failed":
            error = self.error or {}
            raise error_for(error.get("code", "internal_error"), error.get("message", "the job failed"), job=self)
        if self.status == "cancelled":
            raise JobCancelledError(f"job {self.id} was cancelled", job=self)
        return self

    def __repr__(self) -> str:
        progress = self.progress
        return f"Job(id={self.id!r}, status={self.status!r}, stage={progress.get('stage')!r}, {progress.get('done', 0)}/{progress.get('total', 0)})"


def _job_id(job: Job | str) -> str:
    job_id = job.id if isinstance(job, Job) else str(job)
    if not job_id or "/" in job_id or "?" in job_id or "#" in job_id:
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port, normalized (lower case, the scheme's default port filled in)."""
    scheme = url.scheme.lower()
    return scheme, url.host.lower().rstrip("."), url.port or {"http": 80, "https": 443}.get(scheme)


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After``: seconds, or an HTTP date (seconds from now); ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Client:
    """The loramerge HTTP API.

    ``base_url``: the server (default ``$LORAMERGE_SERVER``, else ``http://127.0.0.1:8000``); ``api_key``: sent
    as ``Authorization: Bearer`` (default ``$LORAMERGE_API_KEY``); ``hub_token``: a Hugging Face token sent with
    each ``submit`` and ``submit_init`` as ``X-Hub-Token`` (the server keeps it encrypted while the job runs,
    never returns it).
    ``max_retries``: tries after the first on 429/503 and connection failures; the wait is ``Retry-After``
    (else 0.5 s doubling), and an answer asking for more than ``max_retry_wait_s`` is raised at once.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        hub_token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        max_retry_wait_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("LORAMERGE_SERVER") or DEFAULT_SERVER).rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get("LORAMERGE_API_KEY")
        headers = {"User-Agent": "loramerge-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._hub_token = hub_token
        self.max_retries, self.max_retry_wait_s = max_retries, max_retry_wait_s
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self.sleep = time.sleep  # tests replace it to see the waits

    def __repr__(self) -> str:  # never the key or the token
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        return min(0.5 * 2**attempt, self.max_retry_wait_s)

    def _error(self, response: httpx.Response) -> LoramergeError:
        retry = retry_after_s(response.headers.get("retry-after"))
        try:
            body = response.json()
            error = body["error"]
            code, message = str(error["code"]), str(error.get("message", ""))
            details = error.get("details") if isinstance(error.get("details"), dict) else None
        except (ValueError, KeyError, TypeError):
            text = response.text[:300].strip() if response.content else ""
            code, message, details = "http_error", f"HTTP {response.status_code}" + (f": {text}" if text else ""), None
        return error_for(code, message, details=details, status=response.status_code, retry_after=retry)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        on_retry=None,
    ) -> httpx.Response:
        """One call with its retries; answers the 2xx response or raises the typed error.
        ``on_retry(error)`` may return new headers for the next try (a fresh Idempotency-Key)."""
        headers = dict(headers or {})
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.request(method, path, params=params, json=json_body, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise ConnectionFailedError(f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}") from None
                self.sleep(self._backoff(attempt))
                continue
            if response.status_code < 400:
                return response
            error = self._error(response)
            if not error.retryable or last:
                raise error
            delay = error.retry_after if error.retry_after is not None else self._backoff(attempt)
            if delay > self.max_retry_wait_s:
                raise error
            if on_retry is not None:
                update = on_retry(error)
                if update is None:
                    raise error
                headers.update(update)
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _same_origin(self, url: str) -> httpx.URL:
        """The URL a request for ``url`` goes to, once it is known to be on this client's server. A URL is
        resolved exactly as the request would resolve it (relative, scheme-relative, any case) and its
        origin compared with the server's, default ports filled in."""
        try:
            target = self._http.build_request("GET", url).url
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise InvalidResponseError(f"the artifact URL {url[:200]!r} is not a valid URL ({exc})") from None
        if _origin(target) != _origin(self._http.base_url):
            raise InvalidResponseError(
                f"the artifact URL {url[:200]!r} is not on this server ({self.base_url}): not requested, "
                "so the API key is not sent there"
            )
        return target

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise InvalidResponseError(f"the server answered {response.status_code} with a body that is not JSON") from None

    # -- the API --------------------------------------------------------------------------------------
    def submit(
        self,
        spec: Mapping[str, Any] | str | os.PathLike,
        *,
        idempotency_key: str | None = None,
        hub_token: str | None = None,
    ) -> Job:
        """Queue a merge job. ``spec``: the request body (a mapping) or the path of a JSON job spec file
        (the one ``loramerge merge`` takes, plus ``output.destination``/``private``/``notify`` if wanted).
        ``idempotency_key``: by default a fresh uuid4 per call, sent on every retry, so a retried POST
        never makes a second job; pass your own to make a repeat of the whole call safe too."""
        return self._submit("/v1/merges", spec, idempotency_key=idempotency_key, hub_token=hub_token)

    def submit_init(
        self,
        spec: Mapping[str, Any] | str | os.PathLike,
        *,
        idempotency_key: str | None = None,
        hub_token: str | None = None,
    ) -> Job:
        """Queue an OSRM initialisation job (``POST /v1/inits``): one PEFT LoRA adapter folder per task, to
        train each task from before merging. ``spec``: the request body (a mapping) or the path of a JSON
        file holding it: ``base_model`` (a Hub ID, with ``base_model_revision`` if wanted, or a folder under
        the server's ``LORAMERGE_LOCAL_ROOTS``), ``target_modules``, ``r``, ``lora_alpha``, ``tasks`` (each a
        ``name`` and its samples as ``texts``, ``input_ids`` or ``file``), optionally ``params``,
        ``output.destination``/``private`` and ``notify``. A task's ``file`` is a ``.jsonl`` path *on the
        server*, read there by the worker; from another machine send the samples inline. The answer is a
        ``Job`` of kind ``init``: ``get``, ``wait``, ``cancel``, ``events`` and ``download`` take it like a
        merge. ``idempotency_key`` and ``hub_token`` as for ``submit``; the token reaches a Hub base model
        or an ``hf://`` destination."""
        return self._submit("/v1/inits", spec, idempotency_key=idempotency_key, hub_token=hub_token)

    def _submit(
        self, path: str, spec: Mapping[str, Any] | str | os.PathLike, *, idempotency_key: str | None, hub_token: str | None
    ) -> Job:
        body = load_spec(spec) if isinstance(spec, str | os.PathLike) else dict(spec)
        auto_key = idempotency_key is None
        headers = {"Idempotency-Key": str(uuid.uuid4()) if auto_key else idempotency_key}
        token = hub_token if hub_token is not None else self._hub_token
        if token:
            headers["X-Hub-Token"] = token

        def on_retry(error: LoramergeError):
            # queue_unavailable: the server recorded the job as failed (enqueue_failed) under this key, so
            # the same key would only replay that failure; a fresh one submits again (nothing runs twice).
            if error.code == "queue_unavailable":
                return {"Idempotency-Key": str(uuid.uuid4())} if auto_key else None
            return {}

        response = self._request("POST", path, json_body=body, headers=headers, on_retry=on_retry)
        return Job(self._json(response), replayed=response.headers.get("idempotent-replayed") == "true")

    def get(self, job: Job | str) -> Job:
        """The job's current state (a merge or an init job: the id says which)."""
        return Job(self._json(self._request("GET", f"/v1/merges/{_job_id(job)}")))

    def list(self, *, status: str | None = None, limit: int | None = 20, page_size: int = 100, kind: str = "merge") -> list[Job]:
        """This tenant's jobs of one ``kind`` (``merge``, the default, or ``init``: OSRM initialisations),
        newest first (``status``: queued, running, succeeded, failed, cancelled). ``limit=None``: every job
        (the pages are followed)."""
        if kind not in COLLECTIONS:
            raise ValueError(f"kind must be one of {', '.join(COLLECTIONS)}, not {kind!r}")
        jobs: list[Job] = []
        cursor = 0
        while limit is None or len(jobs) < limit:
            size = page_size if limit is None else min(page_size, limit - len(jobs))
            params: dict[str, Any] = {"limit": max(1, min(size, 100)), "cursor": cursor}
            if status is not None:
                params["status"] = status
            page = self._json(self._request("GET", COLLECTIONS[kind], params=params))
            jobs += [Job(item) for item in page.get("jobs", [])]
            cursor = page.get("next_cursor")
            if cursor is None or not page.get("jobs"):
                break
        return jobs

    def cancel(self, job: Job | str) -> Job:
        """Cancel: a queued job never runs; a running one stops within seconds and leaves no result.
        A job that already succeeded or failed raises ``JobFinishedError``."""
        return Job(self._json(self._request("DELETE", f"/v1/merges/{_job_id(job)}")))

    def purge(self, job: Job | str) -> Job:
        """Delete a finished job's result from the server's store; the job then shows ``purged``. A job
        still queued or running raises ``JobNotFinishedError`` (cancel it first); one whose result went to
        the Hub or S3 raises ``ResultNotLocalError`` (delete it there)."""
        return Job(self._json(self._request("DELETE", f"/v1/merges/{_job_id(job)}", params={"purge": "true"})))

    def methods(self) -> list[dict[str, Any]]:
        """Every merge method with its parameter schema."""
        return self._json(self._request("GET", "/v1/methods"))["methods"]

    def event_page(self, job: Job | str, *, after: str | None = None, limit: int = 100) -> tuple[list[Event], bool]:
        """One page of the job's event log after the cursor ``after``: (events, has_more)."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        page = self._json(self._request("GET", f"/v1/merges/{_job_id(job)}/events", params=params))
        return [Event.from_json(item) for item in page.get("data", [])], bool(page.get("has_more"))

    def events(self, job: Job | str, *, after: str | None = None, read_timeout_s: float = 75.0) -> Iterator[Event]:
        """The job's events as they happen (Server-Sent Events), from the one after ``after`` (an event's
        ``id``) or from the first; ends after the terminal event (``job.succeeded``/``failed``/``cancelled``).
        A dropped or silent stream is opened again from the last event seen (``Last-Event-ID``), so no
        event is missed or repeated; connection failures in a row are bounded by ``max_retries``."""
        job_id = _job_id(job)
        last, failures, delay, drained = after, 0, 0.5, False
        while True:
            received, connected = 0, False
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last is not None:
                headers["Last-Event-ID"] = last
            params = {"after": last} if last is not None else None
            timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout_s)
            try:
                with self._http.stream(
                    "GET", f"/v1/merges/{job_id}/events", params=params, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise self._error(response)
                    connected = True
                    for message in parse(response.iter_lines(), last):
                        if message.retry is not None:
                            delay = message.retry / 1000
                        if not message.data:
                            continue
                        event = message.to_event()
                        last = event.id or last
                        received += 1
                        yield event
                        if event.terminal:
                            return
            except httpx.TransportError:
                pass  # refused, dropped mid-stream or silent past read_timeout_s: open it again from `last`
            except LoramergeError as error:
                if not error.retryable:
                    raise
                delay = error.retry_after if error.retry_after is not None else delay
            if received:
                failures = 0
            elif not connected:
                failures += 1
                if failures > self.max_retries:
                    raise ConnectionFailedError(f"the event stream of job {job_id} failed {failures} times in a row")
            elif self.get(job_id).terminal:
                # Closed with nothing new and no terminal event, and the job has finished: one more pass
                # reads any event still on its way, then the stream is over.
                if drained:
                    return
                drained = True
            self.sleep(min(delay, self.max_retry_wait_s))

    def wait(
        self,
        job: Job | str,
        timeout: float | None = None,
        *,
        progress: bool = True,
        poll_interval_s: float = 1.0,
        raise_on_failure: bool = True,
    ) -> Job:
        """Poll the job until it has finished and answer it. ``progress``: a tqdm bar on stderr (stage,
        modules done/total). A failed job raises the typed error of its ``error.code`` and a cancelled one
        ``JobCancelledError`` (``error.job`` is the job), unless ``raise_on_failure`` is false.
        ``timeout`` (seconds): ``WaitTimeoutError`` past it; the job itself goes on."""
        job_id = _job_id(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _ProgressBar(job_id) if progress else None
        interval = min(0.2, poll_interval_s)
        try:
            while True:
                current = self.get(job_id)
                if bar is not None:
                    bar.update(current)
                if current.terminal:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(f"job {job_id} is still {current.status} after {timeout} s", job=current)
                pause = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
                self.sleep(pause)
                interval = min(interval * 1.5, poll_interval_s)
        finally:
            if bar is not None:
                bar.close()
        return current.raise_for_status() if raise_on_failure else current

    def download(self, job: Job | str, into: str | os.PathLike) -> Path:
        """Download a succeeded job's result (local store) into the folder ``into``, which must not exist or
        be empty: it then holds the PEFT files themselves (``adapter_model.safetensors``, ...), or for an
        init job one PEFT adapter folder per task (``into/<task name>/``) and ``osrm_init.json``. The tar is
        checked as it streams (no absolute paths, ``..``, links or special files: ``UnsafeArtifactError``)
        and against the job's ``result.files``; ``into`` appears only once all of it is there. A dropped
        download starts over (bounded). The artifact URL must be on this client's server (scheme, host and
        port, compared parsed and normalized): any other raises ``InvalidResponseError`` before a request
        is made, so the API key never goes anywhere else."""
        current = job if isinstance(job, Job) and job.result else self.get(job)
        url = self._same_origin(current.artifact_url or f"/v1/merges/{current.id}/artifact")
        files = (current.result or {}).get("files") or []
        for attempt in range(self.max_retries + 1):
            try:
                with self._http.stream("GET", url) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = self._error(response)
                        if not error.retryable or attempt == self.max_retries:
                            raise error
                        self.sleep(min(error.retry_after or self._backoff(attempt), self.max_retry_wait_s))
                        continue
                    return extract(IterReader(response.iter_bytes()), into, expect_files=files)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ConnectionFailedError(f"downloading job {current.id}'s result: {type(exc).__name__}: {exc}") from None
                self.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")


class _ProgressBar:
    """One tqdm bar per stage of the job (a merge: fetch, load, merge, orthogonalize, write, publish; an init
    job: fetch_base_model, load, forward, solve, write, publish)."""

    def __init__(self, job_id: str) -> None:
        self.job_id, self.bar, self.stage = job_id, None, None

    def update(self, job: Job) -> None:
        from tqdm import tqdm

        progress = job.progress
        stage, done, total = progress.get("stage") or job.status, int(progress.get("done") or 0), int(progress.get("total") or 0)
        if self.bar is None or stage != self.stage or done < self.bar.n:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total or None, desc=f"{self.job_id[:8]} {stage}", unit="step", file=sys.stderr, leave=False)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(job.status, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """A job spec JSON file (a merge's or an init job's body); ``merge_error`` when it is missing or not a
    JSON object (like ``loramerge merge``)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error_for("merge_error", f"spec file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error_for("merge_error", f"spec file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise error_for("merge_error", f"spec file {str(path)!r} is not a JSON object")
    return raw

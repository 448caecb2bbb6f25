"""Logging for the API and the workers: text or JSON (one object per line), to stderr or to a rotating
file per process in ``LORAMERGE_LOG_DIR``, with the job's id, tenant and attempt in each of its lines
and secrets scrubbed from every line.

``LORAMERGE_LOG_FORMAT=json`` writes ``{"time", "level", "logger", "process", "pid", "message"}``, plus
``job_id``, ``tenant`` and ``attempt`` while a job runs (``job_context``) and ``exc`` for a traceback.
With ``LORAMERGE_LOG_DIR`` each process writes ``<name>.log`` there (``api``, ``worker-0``, ``webhooks``;
a merge worker's pool process k writes ``<name>.pool<k>.log``: each file has one writer, so rotation is
safe), rotated at ``ROTATE_BYTES`` with ``ROTATE_BACKUPS`` old files kept. Standard library only.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import os
import re
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from jobs.settings import Settings

ROTATE_BYTES = 10 * 1024 * 1024
ROTATE_BACKUPS = 5
TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
JOB_FIELDS = ("job_id", "tenant", "attempt")
LOG_NAME_ENV = "LORAMERGE_LOG_NAME"  # set by `serve` for each process it starts (worker-0, webhooks)

# Shapes of secrets, scrubbed wherever they appear (besides the configured secrets themselves).
SECRET_SHAPES = re.compile(
    r"\bhf_[A-Za-z0-9]{6,}"  # Hugging Face tokens
    r"|\bwhsec_[A-Za-z0-9+/=_-]{6,}"  # webhook signing secrets
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{6,}"  # Authorization headers
    r"|(?i:x-hub-token)[\"']?\s*[:=]\s*[\"']?[^\s\"',}]+"
)
REDACTED = "[redacted]"

_job: contextvars.ContextVar[dict | None] = contextvars.ContextVar("loramerge_job", default=None)
_installed: list[logging.Handler] = []


@contextmanager
def job_context(**fields):
    """Tag every line logged inside with these job fields (``job_id``, ``tenant``, ``attempt``)."""
    token = _job.set({**(_job.get() or {}), **fields})
    try:
        yield
    finally:
        _job.reset(token)


def add_job_context(**fields) -> None:
    """Add fields to the current ``job_context`` (the tenant and attempt, once the job is claimed)."""
    current = _job.get()
    if current is not None:
        current.update(fields)


class Redactor:
    def __init__(self, secrets: list[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return SECRET_SHAPES.sub(REDACTED, text)

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        try:
            secrets = list(settings.tenants_by_key())
        except ValueError:  # reported by whoever reads the keys; the whole value is still scrubbed
            secrets = [settings.api_keys.get_secret_value()]
        for value in (settings.hub_token, settings.secret_key):
            if value is not None:
                secrets.append(value.get_secret_value())
        return cls(secrets)


class _JobFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_job.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message and traceback pass the redactor."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": self.redact(record.getMessage()),
        }
        for name in JOB_FIELDS:
            if getattr(record, name, None) is not None:
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{n}={getattr(record, n)}" for n in JOB_FIELDS if getattr(record, n, None) is not None)
        return self.redact(f"{text} [{fields}]" if fields else text)


def log_name(default: str) -> str:
    return os.environ.get(LOG_NAME_ENV) or default


def configure_logging(settings: Settings, name: str, *, level: int = logging.INFO) -> Path | None:
    """Send the root logger's lines to stderr, or to ``<log_dir>/<name>.log`` (rotating), in the
    configured format. Replaces the handler an earlier call installed. Returns the file, if any."""
    redact = Redactor.from_settings(settings)
    formatter = JsonFormatter(redact) if settings.log_format == "json" else TextFormatter(redact)
    path = None
    if settings.log_dir is not None:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        path = settings.log_dir / f"{name}.log"
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_BACKUPS, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_JobFields())
    root = logging.getLogger()
    for old in _installed:
        root.removeHandler(old)
        old.close()
    _installed[:] = [handler]
    root.addHandler(handler)
    root.setLevel(level)
    return path


def wants_own_logging(settings: Settings) -> bool:
    """Whether the processes should set up logging themselves (JSON, or files) instead of Celery or uvicorn."""
    return settings.log_format == "json" or settings.log_dir is not None

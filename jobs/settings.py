"""Service settings from ``LORAMERGE_*`` environment variables (pydantic-settings).

One object for the API and the workers so both read the same limits. Lists are comma-separated
strings in the environment (``LORAMERGE_LOCAL_ROOTS=/data/adapters,/mnt/loras``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ByteSize, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GiB = 1024**3


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/loramerge``, else ``~/.local/share/loramerge`` (the XDG base directory rule, which
    also says to ignore a relative ``XDG_DATA_HOME``: it would put the data in the current folder)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "loramerge"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAMERGE_", extra="ignore")

    redis_url: str | None = Field(
        default=None, description="External Redis (redis://, rediss://, unix://). Unset: `loramerge serve` starts its own."
    )
    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(),
        description="Embedded Redis data, local result store, staging, Hub cache, secret.key: the user's data folder "
        "($XDG_DATA_HOME/loramerge, else ~/.local/share/loramerge), never the current folder (a checkout could commit it).",
    )
    api_keys: SecretStr | None = Field(
        default=None, description="`key:tenant,key2:tenant2`. Unset: loopback only, tenant `local`."
    )
    local_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders local sources and base models may come from. Empty: local sources refused."
    )
    local_symlinks: Literal["within_roots", "refuse"] = Field(
        default="within_roots",
        description="Symlinks in local sources and base models: `within_roots` follows those that stay under the roots, "
        "`refuse` follows none inside a root. The data dir is never readable.",
    )
    max_adapters_per_job: int = Field(
        default=32, ge=1, le=1000, description="More adapters in one job is a 422 `too_many_adapters`."
    )
    max_adapter_bytes: int = Field(default=4 * GiB, ge=1, description="Largest adapter weights file accepted.")
    max_request_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest HTTP request body.")
    max_queued_jobs: int = Field(default=1000, ge=1, description="Queued jobs across tenants; past it POST answers 429.")
    retry_after_s: int = Field(default=30, ge=1, description="Retry-After sent with 429.")
    finished_job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="How long finished job records are kept.")
    result_max_age_s: int | None = Field(
        default=None,
        ge=60,
        description="Results in the local store older than this are deleted (the job shows `purged_by: retention`). "
        "Unset: as long as the job record (`LORAMERGE_FINISHED_JOB_TTL_S`), so no result outlives its job.",
    )
    result_max_bytes: ByteSize = Field(
        default=ByteSize(0),
        ge=0,
        description="Total size the local result store may hold (`500GiB`); past it the oldest results go first. 0: no bound.",
    )
    hub_cache_max_bytes: ByteSize = Field(
        default=ByteSize(100 * GiB),
        ge=0,
        description="Size the Hub cache may hold (`100GiB`); past it the least recently used revisions go, except "
        "those used within `LORAMERGE_JOB_TIME_LIMIT_S` (a running job may hold them). 0: no bound.",
    )
    retention_interval_s: float = Field(
        default=60.0,
        gt=0,
        le=7 * 24 * 3600,
        description="How often each worker node applies retention to its data dir and reports disk use.",
    )
    job_soft_time_limit_s: int = Field(default=3600, ge=10, description="The job fails with `time_limit_exceeded` past this.")
    job_time_limit_s: int = Field(default=3900, ge=20, description="Hard limit: the worker process is killed.")
    job_lease_s: int = Field(
        default=60, ge=2, description="A running job whose worker is silent this long is requeued (worker lost)."
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Deliveries of one job (worker deaths, transient errors) before it fails."
    )
    retry_backoff_s: float = Field(default=5.0, ge=0, description="First retry delay for transient source errors; doubles.")
    allow_pickle: bool = Field(default=False, description="Read pickle adapter_model.bin. Runs code: trusted sources only.")
    hub_token: SecretStr | None = Field(default=None, description="Server-wide Hugging Face token (a per-job X-Hub-Token wins).")
    secret_key: SecretStr | None = Field(
        default=None, description="Fernet key that encrypts per-job tokens at rest. Unset: generated in data_dir."
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO); credentials from AWS_*.")
    device: str = Field(default="auto", description="Worker device: auto, cpu, cuda, cuda:1.")
    oom_fallback: Literal["cpu", "fail"] = Field(
        default="cpu",
        description="A module that does not fit in GPU memory even alone: merge it on the CPU, or fail the job "
        "(`device_out_of_memory`). Batches that do not fit are split first either way.",
    )
    gpu_queue: str = "gpu"
    cpu_queue: str = "cpu"
    worker_concurrency: int = Field(default=1, ge=1, description="Processes per worker (one per GPU).")
    cancel_grace_s: float = Field(
        default=10.0, ge=1, description="A running job that ignores a cancel this long is stopped by ending its process."
    )
    stranded_after_s: float = Field(
        default=30.0, ge=5, description="A queued job whose message is in no queue this long gets a new one."
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="`serve` waits this long on stop for running jobs, then hands them back to the queue."
    )
    redis_outage_grace_s: float = Field(
        default=120.0, ge=0, description="Workers wait out a Redis restart this long before giving up on a job's outcome."
    )
    redis_appendfsync: Literal["always", "everysec"] = Field(
        default="always",
        description="fsync policy of the embedded Redis's AOF: `always` makes a 202 survive a power cut; `everysec` is faster.",
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="Worker heartbeat period; a worker silent for ten beats stops counting in /readyz."
    )
    sweep_interval_s: float = Field(
        default=10.0, gt=0, description="How often each worker sweeps for stranded queued jobs and dropped tokens."
    )
    merge_batch_elements: int = Field(
        default=1 << 25, ge=1 << 16, description="Largest batch of same-shaped modules merged at once, in factor elements."
    )
    progress_interval_s: float = Field(default=0.5, gt=0, description="Least time between two progress writes of one job.")
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts or CIDRs a webhook URL may reach although they are loopback, private, link-local or "
        "otherwise internal (`127.0.0.1,hooks.internal,10.1.0.0/16`). Empty: public addresses only.",
    )
    webhook_tenant_urls: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="`tenant=url,tenant2=url2`: a tenant's default webhook for jobs without `notify` (terminal events).",
    )
    webhook_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Time limit of one webhook delivery attempt, by the clock: resolving, connecting, sending and reading the answer's headers together.",
    )
    webhook_retry_window_s: float = Field(
        default=86400.0,
        gt=0,
        description="A webhook delivery is retried (exponential backoff, jitter) this long, the last attempt at its end, then failed.",
    )
    webhook_backoff_s: float = Field(default=1.0, gt=0, description="First webhook retry delay; doubles, capped at an hour.")
    webhook_progress_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="Least time between two `progress` webhooks of one job (stage changes and modules done alike), "
        "and between `job.progress` events of its log (each stage change is logged).",
    )
    webhook_secret_grace_s: float = Field(
        default=86400.0, ge=0, description="After a rotation, deliveries are signed with the old secret too for this long."
    )
    webhook_queue: str = Field(default="webhooks", description="Queue of webhook deliveries (own worker, never behind a merge).")
    webhook_concurrency: int = Field(default=4, ge=1, description="Deliveries sent at once by the webhook worker (threads).")
    events_keepalive_s: float = Field(default=15.0, gt=0, description="Server-Sent Events: a keep-alive comment this often.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one object per line (time, level, logger, process, message; job_id, tenant and attempt in a "
        "job's lines). Secrets are scrubbed either way.",
    )
    log_dir: Path | None = Field(
        default=None,
        description="A folder for log files: the API (`api.log`), each worker (`worker-0.log`, its pool processes "
        "`worker-0.pool0.log`) and the webhook worker (`webhooks.log`) each write their own, rotated at 10 MiB, 5 kept. "
        "Unset: stderr.",
    )

    @field_validator("local_roots", mode="before")
    @classmethod
    def _split_roots(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_tenant_urls", mode="before")
    @classmethod
    def _split_tenant_urls(cls, value):
        if isinstance(value, str):
            pairs = {}
            for i, entry in enumerate(part.strip() for part in value.split(",") if part.strip()):
                tenant, sep, url = entry.partition("=")
                if not sep or not tenant.strip() or not url.strip():
                    raise ValueError(f"LORAMERGE_WEBHOOK_TENANT_URLS entry {i + 1} is not `tenant=url`")
                pairs[tenant.strip()] = url.strip()
            return pairs
        return value

    @field_validator("local_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        return [Path(root).expanduser().resolve() for root in roots]

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return Path(value).expanduser().resolve()

    @field_validator("log_dir", mode="before")
    @classmethod
    def _absolute_log_dir(cls, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # LORAMERGE_LOG_DIR= (empty, as an .env may leave it): stderr
        return Path(value).expanduser().resolve()

    def tenants_by_key(self) -> dict[str, str]:
        """Parse ``api_keys``; raise ValueError naming the bad entry (never the key itself)."""
        if self.api_keys is None or not self.api_keys.get_secret_value().strip():
            return {}
        keys: dict[str, str] = {}
        for i, entry in enumerate(self.api_keys.get_secret_value().split(",")):
            key, sep, tenant = entry.strip().partition(":")
            if not sep or not key or not tenant:
                raise ValueError(f"LORAMERGE_API_KEYS entry {i + 1} is not `key:tenant`")
            keys[key] = tenant
        return keys

    def to_env(self) -> dict[str, str]:
        """These settings as LORAMERGE_* variables, for worker processes started from this one."""
        env = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in value.items())
            env[f"LORAMERGE_{name.upper()}"] = str(value)
        return env

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def hub_cache_dir(self) -> Path:
        return self.data_dir / "hub-cache"


@functools.lru_cache
def get_settings() -> Settings:
    return Settings()

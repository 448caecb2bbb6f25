"""One boto3 client factory and one classification of S3 errors, for sources and sinks alike."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from merge_core.errors import SourceNotFoundError
from worker.errors import SourceForbiddenError, SourceUnavailableError

S3Failure = Literal["transient", "not_found", "forbidden", "permanent"]


def s3_client(endpoint_url: str | None):
    return boto3.client("s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"}))


def classify(exc: BaseException) -> tuple[S3Failure, str]:
    """What an S3 error means for the job, and a short description without the server's text:
    5xx, 429/SlowDown and network failures are transient; missing and denied are permanent."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchBucket", "NoSuchKey", "404") or status == 404:
            return "not_found", code or "not found"
        if code in ("AccessDenied", "403") or status == 403:
            return "forbidden", "access denied"
        if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"):
            return "transient", f"the object store answered {status or code}"
        return "permanent", code or f"HTTP {status}"
    if isinstance(exc, NoCredentialsError):
        return "forbidden", "no object-store credentials configured (AWS_*)"
    if isinstance(exc, (EndpointConnectionError, BotoCoreError)):
        return "transient", f"object store unreachable ({type(exc).__name__})"
    return "permanent", type(exc).__name__


@contextmanager
def s3_errors(uri: str):
    """Source side: missing -> source_not_found; denied -> source_forbidden; transient -> retried.
    Our own disk filling up while downloading stays an OSError (the runner's storage_full)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise SourceUnavailableError(f"{uri}: download failed ({type(exc).__name__})", source=uri) from None
    except (ClientError, BotoCoreError) as exc:
        kind, what = classify(exc)
        if kind == "transient":
            raise SourceUnavailableError(f"{uri}: {what}", source=uri) from None
        if kind == "forbidden":
            raise SourceForbiddenError(f"{uri}: {what}", source=uri) from None
        raise SourceNotFoundError(f"{uri}: {what}", source=uri) from None

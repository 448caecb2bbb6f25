"""One boto3 client factory and one translation of S3 errors for sources and sinks."""

from __future__ import annotations

from contextlib import contextmanager

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from merge_core.errors import SourceNotFoundError
from worker.errors import SourceForbiddenError, TransientError


def s3_client(endpoint_url: str | None):
    return boto3.client("s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"}))


@contextmanager
def s3_errors(uri: str):
    """Missing bucket/key -> source_not_found; denied -> source_forbidden; 5xx/network -> transient."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchBucket", "NoSuchKey", "404") or status == 404:
            raise SourceNotFoundError(f"{uri}: {code or 'not found'}", source=uri) from None
        if code in ("AccessDenied", "403") or status == 403:
            raise SourceForbiddenError(f"{uri}: access denied", source=uri) from None
        if status >= 500:
            raise TransientError(f"{uri}: the object store answered {status}; will retry", source=uri) from None
        raise SourceNotFoundError(f"{uri}: {code}", source=uri) from None
    except NoCredentialsError:
        raise SourceForbiddenError(f"{uri}: no object-store credentials configured (AWS_*)", source=uri) from None
    except (EndpointConnectionError, BotoCoreError) as exc:
        raise TransientError(f"{uri}: object store unreachable ({type(exc).__name__}); will retry", source=uri) from None

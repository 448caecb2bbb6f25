"""One boto3 client factory and one translation of S3 errors for sources and sinks."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from merge_core.errors import SourceNotFoundError
from worker.errors import SourceForbiddenError, TransientError


def s3_client(endpoint_url: str | None):
    return boto3.client("s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"}))


class s3_errors:
    """Missing bucket/key -> source_not_found; denied -> source_forbidden; 5xx/network -> transient."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            return False
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchBucket", "NoSuchKey", "404") or status == 404:
                raise SourceNotFoundError(f"{self.uri}: {code or 'not found'}", source=self.uri) from None
            if code in ("AccessDenied", "403") or status == 403:
                raise SourceForbiddenError(f"{self.uri}: access denied", source=self.uri) from None
            if status >= 500:
                raise TransientError(f"{self.uri}: the object store answered {status}; will retry", source=self.uri) from None
            raise SourceNotFoundError(f"{self.uri}: {code}", source=self.uri) from None
        if isinstance(exc, NoCredentialsError):
            raise SourceForbiddenError(f"{self.uri}: no object-store credentials configured (AWS_*)", source=self.uri) from None
        if isinstance(exc, EndpointConnectionError | BotoCoreError):
            raise TransientError(
                f"{self.uri}: object store unreachable ({type(exc).__name__}); will retry", source=self.uri
            ) from None
        return False

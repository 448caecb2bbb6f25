"""``s3://bucket/prefix`` sources on any S3-compatible store; pinned by the weights object's ETag."""

from __future__ import annotations

from pathlib import Path

from jobs.sources import parse_s3
from merge_core.errors import PickleRefusedError, SourceNotFoundError
from merge_core.pipeline import ResolvedSource
from worker.s3 import s3_client, s3_errors
from worker.sources import ADAPTER_FILES, PICKLE_FILE


def resolve_s3(uri: str, *, endpoint_url: str | None, into: Path, allow_pickle: bool, field: str) -> ResolvedSource:
    bucket, prefix = parse_s3(uri, field=field)
    client = s3_client(endpoint_url)
    base = f"{prefix}/" if prefix else ""
    with s3_errors(uri):
        listing = client.list_objects_v2(Bucket=bucket, Prefix=base, Delimiter="/")
        present = {obj["Key"][len(base) :]: obj for obj in listing.get("Contents", [])}
        weights = ADAPTER_FILES[1]
        if weights not in present:
            if PICKLE_FILE in present and not allow_pickle:
                raise PickleRefusedError(f"{uri} has only a pickle {PICKLE_FILE}; the server does not load pickles", source=uri)
            if PICKLE_FILE not in present:
                raise SourceNotFoundError(f"{uri} has no {weights}", source=uri)
            weights = PICKLE_FILE
        if ADAPTER_FILES[0] not in present:
            raise SourceNotFoundError(f"{uri} has no {ADAPTER_FILES[0]}", source=uri)
        into.mkdir(parents=True, exist_ok=True)
        for name in (ADAPTER_FILES[0], weights):
            client.download_file(bucket, base + name, str(into / name))
    return ResolvedSource(path=into, revision="etag:" + present[weights]["ETag"].strip('"'))

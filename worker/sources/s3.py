"""``s3://bucket/prefix`` sources on any S3-compatible store; pinned by the weights object's ETag."""

from __future__ import annotations

from pathlib import Path

from jobs.sources import parse_s3
from merge_core.errors import AdapterTooLargeError, PickleRefusedError, SourceNotFoundError
from merge_core.pipeline import AdapterFolder
from merge_core.spec import AdapterRef
from worker.s3 import s3_client, s3_errors
from worker.sources import ADAPTER_FILES, PICKLE_FILE, FetchContext, source


@source("s3")
def fetch_s3(ref: AdapterRef, *, into: Path, field: str, ctx: FetchContext) -> AdapterFolder:
    uri, allow_pickle = ref.source, ctx.allow_pickle
    bucket, prefix = parse_s3(uri, field=field)
    client = s3_client(ctx.s3_endpoint_url)
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
        size = present[weights].get("Size", 0)
        if ctx.max_adapter_bytes is not None and size > ctx.max_adapter_bytes:
            raise AdapterTooLargeError(
                f"{uri}: {weights} is {size} bytes, over the limit of {ctx.max_adapter_bytes}",
                source=uri,
                size=size,
                limit=ctx.max_adapter_bytes,
            )
        for name in (ADAPTER_FILES[0], weights):
            ctx.check()
            client.download_file(bucket, base + name, str(into / name))
    return AdapterFolder(path=into, revision="etag:" + present[weights]["ETag"].strip('"'))

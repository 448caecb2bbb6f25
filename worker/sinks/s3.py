"""``s3://bucket/prefix`` destinations. S3 has no rename, so a failed upload deletes what it wrote;
objects carry the job id so that a redelivered job may overwrite its own earlier upload, and nothing else.
A 5xx, throttling or an unreachable store is ``destination_unavailable`` (retried, as sources are);
anything else fails the job at once as ``destination_failed``."""

from __future__ import annotations

from pathlib import Path

from jobs.sources import parse_s3
from worker.errors import DestinationError, DestinationExistsError, DestinationUnavailableError
from worker.s3 import classify, s3_client
from worker.sinks import PublishContext, Published, listing, result_files, sink

JOB_META = "loramerge-job"


@sink("s3")
def publish_s3(folder: Path, *, ctx: PublishContext) -> Published:
    uri, job_id, endpoint_url = ctx.destination, ctx.job_id, ctx.s3_endpoint_url
    bucket, prefix = parse_s3(uri, field="output.destination")
    client = s3_client(endpoint_url)
    written: list[str] = []
    try:
        existing = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
        for obj in existing:
            meta = client.head_object(Bucket=bucket, Key=obj["Key"]).get("Metadata", {})
            if meta.get(JOB_META) != job_id:
                raise DestinationExistsError(f"{uri} already holds objects; choose an empty prefix", destination=uri)
        for path in result_files(folder):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {JOB_META: job_id}})
            written.append(key)
    except DestinationError:
        raise
    except Exception as exc:
        for key in written:
            try:
                client.delete_object(Bucket=bucket, Key=key)
            except Exception:
                pass
        kind, what = classify(exc)
        if kind == "transient":
            raise DestinationUnavailableError(
                f"upload to {uri} failed: {what}; nothing was left behind", destination=uri
            ) from None
        raise DestinationError(f"upload to {uri} failed: {what}; nothing was left behind", destination=uri) from None
    return Published(uri=f"s3://{bucket}/{prefix}", files=listing(folder))

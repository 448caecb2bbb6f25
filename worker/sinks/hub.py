"""``hf://org/name`` destinations: one commit with every file (atomic on the Hub), to a repo created
private unless the spec says otherwise; a repo this job created is deleted again if the commit fails."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

from worker.errors import DestinationError, DestinationUnavailableError
from worker.hub import hub_errors
from worker.sinks import PublishContext, Published, listing, result_files, sink


@sink("hub")
def publish_hub(folder: Path, *, ctx: PublishContext) -> Published:
    repo_id, private, token = ctx.destination.removeprefix("hf://"), ctx.private, ctx.hub_token
    api = HfApi(token=token or False)
    created = False
    try:
        with hub_errors(repo_id):
            if not api.repo_exists(repo_id):
                api.create_repo(repo_id, private=private, exist_ok=True)
                created = True
            operations = [
                CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                for p in result_files(folder)
            ]
            commit = api.create_commit(repo_id, operations, commit_message=ctx.commit_message)
    except Exception as exc:
        if created:
            try:
                api.delete_repo(repo_id)
            except Exception:
                pass
        if getattr(exc, "retryable", False):  # a Hub outage while publishing
            raise DestinationUnavailableError(f"the Hub is unavailable for hf://{repo_id}", destination=repo_id) from None
        code = getattr(exc, "code", type(exc).__name__)
        raise DestinationError(
            f"publishing to hf://{repo_id} failed ({code}); nothing was left behind", destination=repo_id
        ) from None
    return Published(uri=f"hf://{repo_id}@{commit.oid}", files=listing(folder))

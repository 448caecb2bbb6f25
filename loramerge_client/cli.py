"""``loramerge submit | submit-init | status | cancel | purge | jobs | download``: the HTTP API from the command line.

``submit`` queues a merge, ``submit-init`` an OSRM initialisation (``POST /v1/inits``); the others take
either kind of job by its id (``jobs --kind init`` lists init jobs). ``loramerge`` (app/cli.py) adds these
commands beside ``merge``, ``init``, ``methods`` and ``serve``;
``python -m loramerge_client`` runs them alone, without importing torch. The server and key come from
``--server``/``--api-key`` or ``$LORAMERGE_SERVER``/``$LORAMERGE_API_KEY``. Output is JSON on stdout,
progress bars on stderr; an error is one line ``error [code]: message`` on stderr, exit status 1 when a
job failed (or was cancelled) and 2 for anything else (bad spec, refused request, server unreachable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loramerge_client.client import COLLECTIONS, DEFAULT_SERVER, Client, Job, load_spec
from loramerge_client.errors import InvalidSpecError, LoramergeError

ENV_PREFIX = "env:"


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=None,
        help=f"the service's URL (default: $LORAMERGE_SERVER, else {DEFAULT_SERVER})",
    )
    common.add_argument(
        "--api-key",
        default=None,
        help="API key, sent as a Bearer token (default: $LORAMERGE_API_KEY; a flag shows in `ps`, the variable does not)",
    )
    return common


def _submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait until the job has finished (progress bar on stderr)")
    parser.add_argument("--out", help="download the result into this folder (must not exist or be empty); implies --wait")
    parser.add_argument("--timeout", type=float, default=None, help="seconds --wait waits at most (default: no limit)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--idempotency-key", help="your own key: running this same command again returns the same job")


def add_commands(sub) -> None:
    """Add the remote commands to a ``loramerge`` subparsers object."""
    common = _connection_options()
    submit = sub.add_parser(
        "submit",
        parents=[common],
        help="submit a job spec to the service (the spec file `loramerge merge` takes)",
        description="Submit the job spec to the service; prints the job as JSON.",
    )
    submit.add_argument("spec", help="job spec JSON file (plus output.destination, output.private, notify if wanted)")
    _submit_options(submit)
    submit.add_argument(
        "--hub-token",
        default=None,
        help="Hugging Face token for private Hub sources or hf:// destinations, sent as X-Hub-Token; "
        "`env:HF_TOKEN` reads it from that variable (never printed; a literal token shows in `ps`)",
    )
    submit.set_defaults(func=_runner(cmd_submit), job_kind="merge")

    init = sub.add_parser(
        "submit-init",
        parents=[common],
        help="submit an OSRM initialisation (the body of POST /v1/inits): one PEFT adapter per task",
        description="Submit an OSRM initialisation job to the service (POST /v1/inits); prints the job as JSON. "
        "With --out, the folder gets one PEFT adapter folder per task and osrm_init.json.",
    )
    init.add_argument(
        "spec",
        help="init spec JSON file: the spec `loramerge init` takes, plus output.destination, output.private, notify if "
        "wanted; a task's `file` is a path on the server (under its LORAMERGE_LOCAL_ROOTS)",
    )
    _submit_options(init)
    init.add_argument(
        "--hub-token",
        default=None,
        help="Hugging Face token for a private Hub base model or an hf:// destination, sent as X-Hub-Token; "
        "`env:HF_TOKEN` reads it from that variable (never printed; a literal token shows in `ps`)",
    )
    init.set_defaults(func=_runner(cmd_submit), job_kind="init")

    status = sub.add_parser("status", parents=[common], help="a job's state as JSON (a merge or an init job)")
    status.add_argument("id")
    status.set_defaults(func=_runner(cmd_status))

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job (a merge or an init job)")
    cancel.add_argument("id")
    cancel.set_defaults(func=_runner(cmd_cancel))

    purge = sub.add_parser("purge", parents=[common], help="delete a finished job's result from the server's store")
    purge.add_argument("id")
    purge.set_defaults(func=_runner(cmd_purge))

    jobs = sub.add_parser("jobs", parents=[common], help="list your jobs, newest first")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    jobs.add_argument("--kind", choices=list(COLLECTIONS), default="merge", help="merge jobs (default) or init jobs")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    jobs.add_argument("--json", action="store_true", help="the jobs as JSON")
    jobs.set_defaults(func=_runner(cmd_jobs))

    download = sub.add_parser(
        "download",
        parents=[common],
        help="download a succeeded job's result into a folder (an init job's: one sub-folder per task)",
    )
    download.add_argument("id")
    download.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    download.set_defaults(func=_runner(cmd_download))


def _client(args: argparse.Namespace, hub_token: str | None = None) -> Client:
    return Client(args.server, args.api_key, hub_token=hub_token)


def _hub_token(value: str | None) -> str | None:
    if value is None or not value.startswith(ENV_PREFIX):
        return value
    name = value[len(ENV_PREFIX) :]
    token = os.environ.get(name)
    if not token:
        raise InvalidSpecError(f"--hub-token {value}: the environment variable {name!r} is not set")
    return token


def _print(data) -> None:
    print(json.dumps(data, indent=2))


def _check_out(out: str | None) -> None:
    """Refuse a bad --out before submitting anything (the same rule as `loramerge merge --out`)."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidSpecError(f"output {out!r} already exists and is not empty", details={"out_dir": out})


def cmd_submit(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    _check_out(args.out)
    with _client(args, _hub_token(args.hub_token)) as client:
        submit = client.submit_init if args.job_kind == "init" else client.submit
        job = submit(spec, idempotency_key=args.idempotency_key)
        if not (args.wait or args.out):
            _print(job.data)
            return 0
        print(f"job {job.id} {job.status}", file=sys.stderr)
        job = client.wait(job, args.timeout, progress=not args.quiet)
        shown = dict(job.data)
        if args.out:
            shown["out"] = str(_download(client, job, args.out))
        _print(shown)
    return 0


def _download(client: Client, job: Job, out: str) -> Path:
    try:
        return client.download(job, out)
    except FileExistsError:
        raise InvalidSpecError(f"output {out!r} already exists and is not empty", details={"out_dir": out}) from None


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.get(args.id).data)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.cancel(args.id).data)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.purge(args.id).data)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.list(status=args.status, limit=args.limit, kind=args.kind)
    if args.json:
        _print([job.data for job in jobs])
        return 0
    print(f"{'ID':36}  {'STATUS':9}  {'METHOD':16}  {'PROGRESS':24}  CREATED")
    for job in jobs:
        progress = job.progress
        stage = f"{progress.get('stage', '')} {progress.get('done', 0)}/{progress.get('total', 0)}"
        if job.error:
            stage = job.error.get("code", "")
        print(f"{job.id:36}  {job.status:9}  {job.method or '':16}  {stage:24}  {job.get('created_at', '')}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    _check_out(args.out)
    with _client(args) as client:
        job = client.get(args.id)
        _print({"id": job.id, "out": str(_download(client, job, args.out)), "files": (job.result or {}).get("files", [])})
    return 0


def _runner(command):
    """The command with its errors as one line on stderr: exit 1 for a job's failure, 2 for anything else."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except LoramergeError as exc:
            print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
            failed = exc.job is not None and exc.job.status in ("failed", "cancelled")
            return 1 if failed else 2
        except KeyboardInterrupt:
            print("error [cancelled]: interrupted (a submitted job goes on: `loramerge cancel ID` stops it)", file=sys.stderr)
            return 130

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loramerge_client", description="The loramerge service from the command line."
    )
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``loramerge`` command: merge_core's commands (merge, init, methods), ``serve``, and the client's remote
commands (submit, submit-init, status, cancel, jobs, download: loramerge_client.cli)."""

from __future__ import annotations

import argparse
import sys

from jobs.errors import ErrorCode
from loramerge_client import cli as client_cli
from merge_core import cli as core_cli


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="start the service: API, one worker, embedded Redis (no Docker)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs LORAMERGE_API_KEYS)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (each consumes the gpu and cpu queues)")
    serve.add_argument(
        "--gpus",
        default=None,
        help="one worker per GPU instead of --workers: 'all' or indices such as '0,1' (each worker sees only its GPU)",
    )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from app.embedded import serve
    from jobs.logs import configure_logging
    from jobs.secrets import TokenBox
    from jobs.settings import Settings

    try:
        settings = Settings()
        configure_logging(settings, "api")  # text or JSON, stderr or <log_dir>/api.log; secrets scrubbed
        TokenBox.from_settings(settings)  # creates secret.key (0600) or refuses one others can read
        gpus = _gpus(args.gpus) if args.gpus else None
    except ValueError as exc:
        print(f"error [{ErrorCode.invalid_settings}]: {exc}", file=sys.stderr)
        return 2
    return serve(settings, host=args.host, port=args.port, workers=args.workers, gpus=gpus)


def _gpus(spec: str) -> list[str]:
    """The GPUs ``--gpus`` names, found without touching CUDA in this process (its workers fork later)."""
    import os
    import shutil
    import subprocess

    from app.embedded import parse_gpus

    listed = None
    if spec == "all" and not os.environ.get("CUDA_VISIBLE_DEVICES") and shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    return parse_gpus(spec, visible=os.environ.get("CUDA_VISIBLE_DEVICES"), listed=listed)


def _add_commands(sub) -> None:
    _add_serve(sub)
    client_cli.add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    return core_cli.main(argv, add_commands=_add_commands)


if __name__ == "__main__":
    sys.exit(main())

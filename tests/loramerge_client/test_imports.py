"""The client stands on its own: importing it (and running its commands) imports no torch, no merge_core,
no Celery and no service code but the webhook signature check it shares with the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PROBE = """
import json, sys
import loramerge_client, loramerge_client.cli
print(json.dumps(sorted(sys.modules)))
"""
FORBIDDEN = {"torch", "merge_core", "celery", "kombu", "redis", "app", "worker", "fastapi", "starlette", "pydantic", "numpy"}


def test_import_pulls_no_torch_library_or_service_code():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout)
    assert not [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert [m for m in modules if m.split(".")[0] == "jobs"] == ["jobs", "jobs.webhook_signing"]


def test_standalone_commands_run():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "loramerge_client", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and all(
        name in done.stdout for name in ("submit", "submit-init", "status", "cancel", "jobs", "download")
    )

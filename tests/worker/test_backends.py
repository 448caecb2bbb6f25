"""Sources and sinks are found by kind, with no import list: every kind a source or destination string
can name (jobs.sources) has exactly one backend, and a second registration of a kind is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker.backends import Backends


def test_every_kind_has_its_backend_in_a_fresh_interpreter():
    program = (
        "from worker.sources import _SOURCES; from worker.sinks import _SINKS; "
        "print(sorted(_SOURCES.all()), sorted(_SINKS.all()))"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['hub', 'local', 's3'] ['hub', 'local', 's3']"


def test_a_kind_registered_twice_is_refused():
    backends: Backends[object] = Backends("worker.sinks", "sink")
    backends.register("x")(print)
    with pytest.raises(ValueError, match="registered twice"):
        backends.register("x")(len)

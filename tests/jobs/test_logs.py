"""jobs.logs: one JSON object per line with the job's fields while it runs, secrets scrubbed in every
format, and a rotating file per process."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from pydantic import SecretStr

from jobs.logs import Redactor, add_job_context, configure_logging, job_context
from jobs.settings import Settings

TOKEN = "hf_abcdefghijklmnop0123"
SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ="


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_json_lines_carry_the_job_and_never_a_secret(tmp_path, restore_root):
    settings = Settings(
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        log_format="json",
        api_keys=SecretStr("opaque-key-7777:alice"),
        hub_token=SecretStr("server-wide-token-xyz"),
    )
    path = configure_logging(settings, "worker-0")
    log = logging.getLogger("loramerge.test")
    log.info("outside any job")
    with job_context(job_id="j1"):
        add_job_context(tenant="alice", attempt=2)
        log.warning("fetching with %s and %s, key opaque-key-7777, server-wide-token-xyz", TOKEN, SECRET)
        thread = threading.Thread(target=lambda: log.info("from a thread that did not copy the context"))
        thread.start()
        thread.join()
        try:
            raise ValueError(f"Authorization: Bearer {TOKEN}")
        except ValueError:
            log.exception("failed")
    logging.getLogger().handlers[-1].flush()
    text = path.read_text()
    assert path == tmp_path / "logs" / "worker-0.log"
    for secret in (TOKEN, SECRET, "opaque-key-7777", "server-wide-token-xyz", "c2VjcmV0"):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["message"] for line in lines][0] == "outside any job" and "job_id" not in lines[0]
    assert {k: lines[1][k] for k in ("job_id", "tenant", "attempt", "level")} == {
        "job_id": "j1",
        "tenant": "alice",
        "attempt": 2,
        "level": "WARNING",
    }
    assert "job_id" not in lines[2]  # a thread of its own has its own context
    assert lines[3]["job_id"] == "j1" and "ValueError" in lines[3]["exc"] and "[redacted]" in lines[3]["exc"]


def test_text_lines_are_scrubbed_too():
    redact = Redactor(["literal-secret"])
    assert redact(f"x-hub-token: {TOKEN} and literal-secret") == "[redacted] and [redacted]"
    assert redact('{"X-Hub-Token": "abc123456"}') == '{"[redacted]"}'

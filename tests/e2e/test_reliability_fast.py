"""The reliability suite's fast subset (``python -m reliability --fast``), one test per scenario,
on one stack of real processes (Redis, 2 workers, API, Hub stand-in). About a minute."""

from __future__ import annotations

import pytest

from reliability.__main__ import SCENARIOS, STACK_SETTINGS
from reliability.report import run_scenario
from support.stack import ProcessStack


@pytest.fixture(scope="module")
def reliability_stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    with ProcessStack(base / "main", workers=2, **STACK_SETTINGS) as stack:
        yield stack, base


@pytest.mark.parametrize(("name", "body"), SCENARIOS, ids=[name for name, _ in SCENARIOS])
def test_scenario(reliability_stack, name, body):
    stack, base = reliability_stack
    outcome = run_scenario(name, lambda: body(stack, base, True))
    assert outcome.ok, f"{name}: {outcome.error}"

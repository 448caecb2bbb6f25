"""One row per scenario: name, pass/fail, and the figures it measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Outcome:
    scenario: str
    ok: bool
    figures: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""


def run_scenario(name: str, body: Callable[[], dict]) -> Outcome:
    started = time.monotonic()
    try:
        figures = body()
        return Outcome(name, True, figures, time.monotonic() - started)
    except AssertionError as exc:
        return Outcome(name, False, {}, time.monotonic() - started, str(exc)[:300])
    except Exception as exc:
        return Outcome(name, False, {}, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:300])


def table(outcomes: list[Outcome]) -> str:
    rows = [("scenario", "result", "time", "figures")]
    for o in outcomes:
        figures = ", ".join(f"{k}={v}" for k, v in o.figures.items()) if o.ok else o.error
        rows.append((o.scenario, "PASS" if o.ok else "FAIL", f"{o.seconds:.1f}s", figures))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * min(120, max(len(line) for line in lines)))
    return "\n".join(lines)

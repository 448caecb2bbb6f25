"""One row per scenario: name, pass/fail, and the figures it measured."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


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
    except AssertionError as exc:  # a bare `assert` has no message: say which one failed
        return Outcome(name, False, {}, time.monotonic() - started, f"{str(exc)[:400] or 'assertion failed'} ({_where(exc)})")
    except Exception as exc:
        return Outcome(name, False, {}, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:300])


def _where(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}: {frame.line}"


def table(outcomes: list[Outcome]) -> str:
    rows = [("scenario", "result", "time", "figures")]
    for o in outcomes:
        figures = ", ".join(f"{k}={v}" for k, v in o.figures.items()) if o.ok else o.error
        rows.append((o.scenario, "PASS" if o.ok else "FAIL", f"{o.seconds:.1f}s", figures))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * min(120, max(len(line) for line in lines)))
    return "\n".join(lines)

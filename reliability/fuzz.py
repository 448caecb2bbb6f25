"""Schema fuzzing: schemathesis generates requests from the live OpenAPI document (valid and
deliberately invalid ones) for every operation; no answer may be a 5xx."""

from __future__ import annotations

import time
from collections import Counter

from support.stack import KEYS, ProcessStack


def fuzz_openapi(stack: ProcessStack, requests: int = 10_000) -> dict:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    per_run = max(1, requests // (len(operations) * len(modes)))
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    skipped: set[str] = set()
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    started = time.monotonic()
    rounds = 0
    while sum(statuses.values()) < requests and rounds < 50:  # operations with little input run dry early
        rounds += 1
        for operation in operations:
            for mode in modes:

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=per_run,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def probe(case) -> None:
                    response = case.call(base_url=stack.url, headers=headers, timeout=60)
                    statuses[response.status_code] += 1
                    if response.status_code >= 500 and len(server_errors) < 5:
                        server_errors.append(
                            f"{case.method} {case.formatted_path} -> {response.status_code} {response.text[:200]}"
                        )

                try:
                    probe()
                except Unsatisfiable:
                    skipped.add(f"{operation.method.upper()} {operation.path} ({mode.value})")  # nothing to negate
    total = sum(statuses.values())
    fives = sum(n for code, n in statuses.items() if code >= 500)
    assert fives == 0, f"{fives} answers were 5xx: {server_errors}"
    assert total >= requests, f"only {total} requests were generated"
    top = ", ".join(f"{code}:{n}" for code, n in statuses.most_common(6))
    return {
        "requests": total,
        "operations": len(operations),
        "5xx": 0,
        "per_s": round(total / (time.monotonic() - started)),
        "statuses": top,
    }

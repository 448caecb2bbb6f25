"""``python -m reliability [--fast]``: run every scenario against real processes on loopback and
print a table of scenario, result and figures. Exit status 1 when any scenario fails."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from reliability import confinement, faults, fuzz, hostile, load, regex_dos, security, shutdown, webhooks
from reliability.report import run_scenario, table
from support.stack import ProcessStack

# Main-stack settings: 2 workers (the load target), adapters up to 12 MiB (the size-limit case
# writes a bigger one; the slow fault jobs stay under it), a short lease so lost workers are noticed fast.
# Webhook receivers are loopback servers (allowed explicitly), retried quickly for a minute.
STACK_SETTINGS = {
    "max_adapter_bytes": 12 << 20,
    "max_queued_jobs": 2000,
    "job_lease_s": 6,
    "stranded_after_s": 5,
    "webhook_allowed_hosts": ["127.0.0.1"],
    "webhook_retry_window_s": 60.0,
    "webhook_backoff_s": 0.2,
}


# (name, run(stack, base, fast)) in the order they run; tests/e2e/test_reliability_fast.py parametrizes over it.
SCENARIOS = [
    ("fault: worker kill -9 mid-merge", lambda stack, base, fast: faults.worker_kill(stack)),
    ("fault: whole worker kill -9 mid-merge", lambda stack, base, fast: faults.worker_node_kill(stack)),
    ("fault: frozen holder (SIGSTOP past its lease)", lambda stack, base, fast: faults.frozen_holder(stack)),
    ("fault: Redis restart mid-run", lambda stack, base, fast: faults.redis_restart(stack)),
    ("fault: Redis kill -9 while submitting", lambda stack, base, fast: faults.stranded_queued(stack)),
    (
        "fault: serve stopped by SIGTERM/SIGHUP/SIGINT",
        lambda stack, base, fast: shutdown.serve_signals(base, signals=(signal.SIGTERM,) if fast else shutdown.SIGNALS),
    ),
    ("fault: API restart mid-run", lambda stack, base, fast: faults.api_restart(stack)),
    ("fault: Hub 503 x2 then 200 / 404", lambda stack, base, fast: faults.transient_and_missing_source(stack)),
    (
        "fault: webhook receiver flapping while workers restart",
        lambda stack, base, fast: webhooks.receiver_flapping_while_workers_restart(stack, 8 if fast else 24),
    ),
    ("fault: unwritable result store", lambda stack, base, fast: faults.unwritable_sink(stack)),
    ("fault: disk full (RLIMIT_FSIZE)", lambda stack, base, fast: faults.disk_full(base)),
    ("input: hostile adapter corpus", lambda stack, base, fast: hostile.hostile_corpus(stack)),
    ("input: size limits", lambda stack, base, fast: hostile.size_limits(stack)),
    ("input: catastrophic rank_pattern regex", lambda stack, base, fast: regex_dos.regex_dos(stack)),
    ("input: OpenAPI fuzzing", lambda stack, base, fast: fuzz.fuzz_openapi(stack, 1_000 if fast else 10_000)),
    ("security: tenant isolation", lambda stack, base, fast: security.tenant_isolation(stack)),
    ("security: per-job token secrecy", lambda stack, base, fast: security.secrets_stay_secret(stack)),
    ("security: authentication", lambda stack, base, fast: security.authentication_required(stack)),
    ("security: local confinement (symlinks, data dir)", lambda stack, base, fast: confinement.confinement(stack)),
    ("load: queue bound 429", lambda stack, base, fast: load.queue_bound(stack)),
    (
        "load: jobs from concurrent clients",
        lambda stack, base, fast: load.load(stack, 100, 10) if fast else load.load(stack, 500, 50),
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="the CI subset: 1,000 fuzz requests, 100 load jobs")
    parser.add_argument("--only", help="run scenarios whose name contains this text")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="loramerge-reliability-"))
    started = time.monotonic()
    outcomes = []
    with ProcessStack(base / "main", workers=2, **STACK_SETTINGS) as stack:
        for name, body in SCENARIOS:
            if args.only and args.only not in name:
                continue
            outcome = run_scenario(name, lambda body=body: body(stack, base, args.fast))
            print(f"{'PASS' if outcome.ok else 'FAIL'}  {name}  ({outcome.seconds:.1f}s)", file=sys.stderr, flush=True)
            outcomes.append(outcome)
    print(table(outcomes))
    print(f"\n{sum(o.ok for o in outcomes)}/{len(outcomes)} passed in {time.monotonic() - started:.0f} s; logs in {base}")
    if all(o.ok for o in outcomes):
        shutil.rmtree(base, ignore_errors=True)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Re-key the quality benchmark's stored units after a code change that moves none of them.

A unit's key holds a fingerprint of merge_core and of the benchmark's scoring code (benchmarks/quality/keys.py),
so any change there, even one no stored merge goes through (what ``scaling: "auto"`` reads, a docstring),
orphans every stored unit: the next run would recompute hours of merges to the same numbers. This script moves
them to their new keys instead, and checks that claim on a sample:

    # 1. before the change: each stored unit's key, by its label
    PYTHONPATH=. python scripts/rekey_units.py record /tmp/keys.json -- --model decoder --n-seeds 3 --all-rows-on 0
    # 2. after it, the same run: each unit asked for takes the value recorded under its label
    PYTHONPATH=. python scripts/rekey_units.py apply /tmp/keys.json -- --model decoder --n-seeds 3 --all-rows-on 0
    # 3. recompute units by label with today's code, and compare with what step 2 stored, to the bit
    PYTHONPATH=. python scripts/rekey_units.py verify "distinct2-tsv at norm_match" -- --model decoder ...

A run cut off (a replicate half done) re-keys what it stored: record and apply stop at the first unit that is not
stored. The runs write neither docs nor the results JSON (``--no-docs``, ``--out`` a temporary file). Step 2 writes
nothing until the whole run has matched the recorded labels, then deletes the old files it moved. A change that
does move a result must not be re-keyed: step 3 fails on it (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.quality import __main__ as benchmark
from benchmarks.quality.store import Store

_unit = Store.unit  # the store's own method, wrapped below


class _Unfinished(Exception):
    """The run reached a unit that is not stored: a run cut off, whose stored units are what there is."""


def _refuse(label: str):
    def compute():
        raise _Unfinished(label)

    return compute


def _run(benchmark_args: list[str], unit) -> bool:
    """The benchmark run with ``unit`` in place of ``Store.unit`` (restored after); False when it stopped at a unit
    that is not stored (the units of a run are asked for in the order they were computed)."""
    Store.unit = unit
    try:
        with tempfile.TemporaryDirectory() as tmp:
            benchmark.main([*benchmark_args, "--no-docs", "--out", str(Path(tmp) / "results.json")])
        return True
    except _Unfinished as stop:
        print(f"stopped at {stop}, which is not stored: the units before it are the run's", file=sys.stderr)
        return False
    finally:
        Store.unit = _unit


def record(path: Path, benchmark_args: list[str]) -> None:
    keys: dict[str, str] = {}  # label -> key

    def unit(self: Store, key: str, compute, *, label: str = "") -> dict:
        if keys.get(label, key) != key:
            raise SystemExit(f"two units are labelled {label!r}: they cannot be told apart")
        value = _unit(self, key, _refuse(label), label=label)  # stops the run at the first unit not stored
        keys[label] = key
        return value

    _run(benchmark_args, unit)
    path.write_text(json.dumps(keys, indent=0, sort_keys=True))
    print(f"recorded {len(keys)} unit keys in {path}")


def apply(path: Path, benchmark_args: list[str]) -> None:
    recorded: dict[str, str] = json.loads(path.read_text())
    moves: dict[Path, tuple[Path, dict]] = {}  # new file -> (old file, its record under the new key)
    asked: set[str] = set()

    def unit(self: Store, key: str, compute, *, label: str = "") -> dict:
        if label not in recorded:
            return _unit(self, key, _refuse(label), label=label)  # stored under its new key already, or the end
        asked.add(label)
        old_key = recorded[label]
        new, old = self.path(key), self.path(old_key)
        if new.exists() or key == old_key:
            return _unit(self, key, _refuse(label), label=label)
        stored = json.loads(old.read_text())
        if stored.get("key") != old_key:
            raise SystemExit(f"{old} does not hold unit {label!r}: nothing re-keyed")
        moves[new] = (old, {**stored, "key": key})
        return stored["value"]

    finished = _run(benchmark_args, unit)
    left = sorted(set(recorded) - asked)
    if finished and left:
        raise SystemExit(f"{len(left)} recorded units were not asked for (e.g. {left[:3]}): nothing re-keyed")
    if left:  # a run cut off mid-row: units asked for in another order by the new code; recomputed when resumed
        print(f"{len(left)} recorded units after the stop stay under their old keys: {left}", file=sys.stderr)
    for new, (_, record) in moves.items():  # only once the run matched, unit by unit
        new.write_text(json.dumps(record))
    for old in {old for old, _ in moves.values()}:
        old.unlink()
    print(f"re-keyed {len(moves)} units ({len(asked)} asked for)")


def verify(labels: list[str], benchmark_args: list[str]) -> int:
    results: dict[str, bool] = {}

    def unit(self: Store, key: str, compute, *, label: str = "") -> dict:
        stored = _unit(self, key, _refuse(label), label=label)
        if label in labels and label not in results:
            fresh = json.loads(json.dumps(compute()))  # as the store would have written it
            results[label] = fresh == stored
            print(f"{label}: {'the same' if results[label] else 'DIFFERENT'}", file=sys.stderr)
        return stored

    _run(benchmark_args, unit)
    missing = sorted(set(labels) - set(results))
    if missing:
        print(f"no unit labelled {missing}", file=sys.stderr)
    return 0 if results and all(results.values()) and not missing else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    own, benchmark_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("record").add_argument("keys", type=Path)
    sub.add_parser("apply").add_argument("keys", type=Path)
    sub.add_parser("verify").add_argument("labels", nargs="+")
    args = parser.parse_args(own)
    if args.step == "record":
        record(args.keys, benchmark_args)
    elif args.step == "apply":
        apply(args.keys, benchmark_args)
    else:
        return verify(args.labels, benchmark_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

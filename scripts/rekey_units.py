"""Re-key the quality benchmark's stored units after a code change that moves none of them.

A unit's key holds a fingerprint of merge_core and of the benchmark's scoring code (benchmarks/quality/keys.py),
so any change there, even one no stored merge goes through (what ``scaling: "auto"`` reads, a docstring),
orphans every stored unit: the next run would recompute hours of merges to the same numbers. This script moves
them to their new keys instead, and checks that claim on a sample:

    # 1. before the change, every unit of the run present: the keys, in the order the run asks for them
    PYTHONPATH=. python scripts/rekey_units.py record /tmp/keys.json -- --model decoder --n-seeds 3 --all-rows-on 0
    # 2. after it, the same run: the i-th unit asked for takes the i-th recorded one's value (labels must agree)
    PYTHONPATH=. python scripts/rekey_units.py apply /tmp/keys.json -- --model decoder --n-seeds 3 --all-rows-on 0
    # 3. recompute units by label with today's code, and compare with what step 2 stored, to the bit
    PYTHONPATH=. python scripts/rekey_units.py verify "distinct2-tsv at norm_match" -- --model decoder ...

The runs write neither docs nor the results JSON (``--no-docs``, ``--out`` a temporary file). Step 2 deletes
the old files it moved. A change that does move a result must not be re-keyed: step 3 fails on it (exit 1).
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


def _refuse(label: str):
    def compute():
        raise SystemExit(f"unit {label!r} is not stored: finish the run before re-keying")

    return compute


def _run(benchmark_args: list[str], unit) -> None:
    """The benchmark run with ``unit`` in place of ``Store.unit`` (restored after)."""
    Store.unit = unit
    try:
        with tempfile.TemporaryDirectory() as tmp:
            benchmark.main([*benchmark_args, "--no-docs", "--out", str(Path(tmp) / "results.json")])
    finally:
        Store.unit = _unit


def record(path: Path, benchmark_args: list[str]) -> None:
    calls: list[list[str]] = []

    def unit(self: Store, key: str, compute, *, label: str = "") -> dict:
        calls.append([key, label])
        return _unit(self, key, _refuse(label), label=label)

    _run(benchmark_args, unit)
    path.write_text(json.dumps(calls))
    print(f"recorded {len(calls)} unit keys in {path}")


def apply(path: Path, benchmark_args: list[str]) -> None:
    recorded = json.loads(path.read_text())
    moved: list[Path] = []
    position = 0

    def unit(self: Store, key: str, compute, *, label: str = "") -> dict:
        nonlocal position
        if position >= len(recorded):
            raise SystemExit(f"the run asks for more units than were recorded (at {label!r})")
        old_key, old_label = recorded[position]
        position += 1
        if label != old_label:
            raise SystemExit(f"unit {position} is {label!r} now and was {old_label!r}: the runs differ, nothing re-keyed")
        new, old = self.path(key), self.path(old_key)
        if key != old_key and not new.exists():
            stored = json.loads(old.read_text())
            if stored.get("key") != old_key:
                raise SystemExit(f"{old} does not hold unit {old_label!r}")
            new.write_text(json.dumps({**stored, "key": key}))
            moved.append(old)
        return _unit(self, key, _refuse(label), label=label)

    _run(benchmark_args, unit)
    if position != len(recorded):
        raise SystemExit(f"the run asked for {position} units, {len(recorded)} were recorded: nothing deleted")
    for old in set(moved):
        old.unlink()
    print(f"re-keyed {len(set(moved))} unit files ({position} units asked for)")


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

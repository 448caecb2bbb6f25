"""The reliability suite: fault injection, hostile input, fuzzing, security and load against a real
stack of processes on loopback. ``python -m reliability`` runs it and prints a table; ``--fast`` is
the subset CI runs (tests/e2e/test_reliability_fast.py)."""

"""Engine behaviour a caller relies on: progress per batch (and per few steps inside an iterating kernel),
cancel at a module boundary or at a kernel's checkpoint, batching."""

import time

import pytest
import torch

from merge_core.engine import merge_adapters
from merge_core.errors import MergeCancelledError
from merge_core.registry import get_method
from support.factories import memory_adapter

SHAPES = {f"l{i}.{m}": shape for i in range(4) for m, shape in (("q", (24, 16)), ("up", (40, 16)))}


def test_progress_reaches_the_total_and_batches_do_not_change_the_result():
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=2, seed=2)]
    method = get_method("do_merging")
    seen = []
    batched = merge_adapters(adapters, method, method.parse_params({}), dtype=torch.float64, progress=lambda *a: seen.append(a))
    single = merge_adapters(adapters, method, method.parse_params({}), dtype=torch.float64, batch_elements=1)
    assert seen[-1] == ("merge", len(SHAPES), len(SHAPES))
    assert len([a for a in seen if a[0] == "merge"]) == 2  # two shape groups, each one batch
    assert ("orthogonalize", 200, 200) in seen  # and the descent's steps inside each batch
    for name in SHAPES:
        assert torch.allclose(batched.delta(name), single.delta(name), rtol=1e-10, atol=1e-14)


def test_cancel_stops_at_a_module_boundary():
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=4, seed=2)]
    method = get_method("task_arithmetic")
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(MergeCancelledError) as exc:
        merge_adapters(adapters, method, method.parse_params({}), should_cancel=should_cancel, batch_elements=1)
    assert exc.value.details == {"done": 3, "total": len(SHAPES)}
    assert exc.value.code == "cancelled"


def test_cancel_lands_inside_a_long_orthogonalization():
    """One batch with ortho_steps=10,000: the cancel must not wait for the batch (once 6 min in the service)."""
    adapters = [memory_adapter({"l0.q": (24, 16)}, rank=4, seed=1), memory_adapter({"l0.q": (24, 16)}, rank=4, seed=2)]
    method = get_method("do_merging")
    calls, seen = [], []

    def should_cancel():
        calls.append(1)
        return len(calls) > 5

    started = time.monotonic()
    with pytest.raises(MergeCancelledError) as exc:
        merge_adapters(
            adapters,
            method,
            method.parse_params({"ortho_steps": 10_000}),
            progress=lambda *a: seen.append(a),
            should_cancel=should_cancel,
        )
    assert time.monotonic() - started < 5
    assert exc.value.code == "cancelled" and exc.value.details == {"done": 0, "total": 1}
    assert "at orthogonalize step" in exc.value.message
    # the batch-boundary check, then one check and one progress line per 10 descent steps (or per 0.2 s)
    assert len(seen) == 4 and all(stage == "orthogonalize" and total == 20_000 for stage, _, total in seen)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen) and seen[-1][1] <= 40

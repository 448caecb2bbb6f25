"""Engine behaviour a caller relies on: progress per batch (and per few steps inside an iterating kernel),
cancel at a module boundary or at a kernel's checkpoint, batching."""

import dataclasses
import time

import pytest
import torch

from merge_core import errors
from merge_core.engine import merge_adapters
from merge_core.errors import MergeCancelledError
from merge_core.registry import get_method
from support.factories import memory_adapter

SHAPES = {f"l{i}.{m}": shape for i in range(4) for m, shape in (("q", (24, 16)), ("up", (40, 16)))}
SHAPES_OOM = {f"l{i}.q": (24, 16) for i in range(5)}


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


def test_a_batch_that_runs_out_of_device_memory_is_split_and_gives_the_same_result(monkeypatch):
    import merge_core.engine as engine

    adapters = [memory_adapter(SHAPES_OOM, rank=4, seed=s) for s in (1, 2)]
    method = get_method("do_merging")
    params = method.parse_params({})
    expected = merge_adapters(adapters, method, params)
    sizes = []
    real_kernel = method.kernel

    def small_device(batch, p):  # a device that holds one module at a time
        sizes.append(len(batch.names))
        if len(batch.names) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_kernel(batch, p)

    monkeypatch.setattr(engine, "_plan_batches", lambda *a: [(sorted(SHAPES_OOM), [(0, False), (1, False)])])
    got = merge_adapters(adapters, dataclasses.replace(method, kernel=small_device), params)
    assert sizes[0] == len(SHAPES_OOM) and sizes.count(1) == len(SHAPES_OOM)
    for name in SHAPES_OOM:
        torch.testing.assert_close(got.delta(name), expected.delta(name))


def test_a_module_that_never_fits_fails_typed_or_falls_back_to_the_cpu():
    from merge_core.engine import run_guarded

    calls = []

    def run(names, device):
        calls.append((tuple(names), device.type))
        if device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    run_guarded(run, ["a", "b"], torch.device("cuda"), "cpu")  # only builds a device object: no CUDA call
    assert calls == [(("a", "b"), "cuda"), (("a",), "cuda"), (("a",), "cpu"), (("b",), "cuda"), (("b",), "cpu")]
    with pytest.raises(errors.DeviceOutOfMemoryError) as exc:
        run_guarded(run, ["a"], torch.device("cuda"), "fail")
    assert exc.value.code == "device_out_of_memory" and "LORAMERGE_OOM_FALLBACK" in exc.value.message

    def always(names, device):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(errors.DeviceOutOfMemoryError):  # on the CPU there is nowhere to fall back to
        run_guarded(always, ["a"], torch.device("cpu"), "cpu")


def test_a_gpu_batch_is_sized_from_its_free_memory(monkeypatch):
    from merge_core import engine

    assert engine.device_batch_elements(torch.device("cpu"), 1 << 25, torch.float32) == 1 << 25  # the setting
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (64 << 20, 80 << 30))  # 64 MiB free
    fits = (64 << 20) * engine.DEVICE_MEMORY_SHARE // (4 * engine.WORKING_SET_FACTOR)
    assert engine.device_batch_elements(torch.device("cuda"), 1 << 25, torch.float32) == fits < 1 << 25
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (80 << 30, 80 << 30))
    assert engine.device_batch_elements(torch.device("cuda"), 1 << 25, torch.float32) == 1 << 25  # never above it

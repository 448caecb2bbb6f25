"""run_merge publishes all or nothing: a failure while writing leaves no output and no temp folder."""

import pytest
from safetensors.torch import save_file

from merge_core import errors
from merge_core.pipeline import run_merge
from merge_core.registry import MergeMethod, validate_spec
from merge_core.spec import parse_spec
from support.factories import write_adapter_folder


def test_failure_while_writing_leaves_nothing(tmp_path):
    import torch

    adapter = write_adapter_folder(tmp_path / "a")
    base = tmp_path / "base"
    base.mkdir()
    save_file({"model.embed_tokens.weight": torch.zeros(3, 4)}, str(base / "model.safetensors"))
    spec = parse_spec(
        {
            "method": "task_arithmetic",
            "adapters": [{"source": str(adapter)}],
            "output": {"kind": "merged_model", "base_model": str(base)},
        }
    )
    with pytest.raises(errors.BaseModelError, match="no weight"):
        run_merge(spec, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "base"]


def test_progress_covers_load_and_merge(tmp_path):
    a, b = write_adapter_folder(tmp_path / "a", seed=1), write_adapter_folder(tmp_path / "b", seed=2, rank=2)
    seen = []
    spec = parse_spec({"method": "do_merging", "adapters": [{"source": str(a)}, {"source": str(b), "revision": "v1"}]})
    outcome = run_merge(spec, tmp_path / "out", progress=lambda *x: seen.append(x))
    assert ("load", 2, 2) in seen and seen[-1][0] == "merge" and seen[-1][1] == seen[-1][2]
    assert outcome.sources[1]["revision"] == "v1"
    assert "v1" in (tmp_path / "out" / "README.md").read_text()


def test_run_merge_takes_a_checked_spec_without_checking_it_again(tmp_path, monkeypatch):
    adapter = write_adapter_folder(tmp_path / "a")
    resolved = validate_spec(parse_spec({"method": "task_arithmetic", "adapters": [{"source": str(adapter)}]}))

    def parsed_again(*args, **kwargs):
        raise AssertionError("params parsed a second time")

    monkeypatch.setattr(MergeMethod, "parse_params", parsed_again)
    assert "adapter_model.safetensors" in run_merge(resolved, tmp_path / "out").files


def test_a_failed_safetensors_write_is_an_oserror_with_its_errno(tmp_path, monkeypatch):
    """safetensors reports write failures as SafetensorError text; the real fault (RLIMIT_FSIZE) is
    exercised by the reliability suite's disk_full scenario, this pins the translation."""
    import errno

    import torch
    from safetensors import SafetensorError

    from merge_core import safetensors_writer

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors_writer, "save_file", full_disk)
    with pytest.raises(OSError) as raised:
        safetensors_writer.save_tensors({"x": torch.zeros(4)}, tmp_path / "w.safetensors")
    assert raised.value.errno == errno.ENOSPC


def test_the_merged_output_waits_on_disk_not_in_memory_and_goes_with_the_outcome(tmp_path):
    import gc

    import torch

    from merge_core.adapters import StoredTensor, load_adapter
    from merge_core.engine import merge_adapters
    from merge_core.registry import get_method

    folders = [write_adapter_folder(tmp_path / "a", seed=1), write_adapter_folder(tmp_path / "b", seed=2, rank=2)]
    spec = parse_spec({"method": "task_arithmetic", "adapters": [{"source": str(f)} for f in folders]})
    outcome = run_merge(spec, tmp_path / "out")
    name = outcome.merged.names()[0]
    B, A = outcome.merged.modules[name]
    assert isinstance(B, StoredTensor) and isinstance(A, StoredTensor)  # a batch's result is written, not kept
    spill = B.path.parent
    assert spill.parent == tmp_path and spill.name.startswith(".out.spill-")
    method = get_method("task_arithmetic")
    in_memory = merge_adapters([load_adapter(f) for f in folders], method, method.parse_params({}))
    torch.testing.assert_close(outcome.merged.delta(name), in_memory.delta(name))
    del outcome, B, A
    gc.collect()
    assert not spill.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]


def test_a_bad_adapter_is_named_by_its_place_in_the_job(tmp_path):
    good = write_adapter_folder(tmp_path / "good", seed=1)
    bad = write_adapter_folder(tmp_path / "bad", seed=2)
    (bad / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    spec = parse_spec({"method": "task_arithmetic", "adapters": [{"source": str(good)}, {"source": str(bad)}]})
    with pytest.raises(errors.CorruptSafetensorsError) as exc:
        run_merge(spec, tmp_path / "out")
    assert exc.value.message.startswith(f"adapters[1] ({bad}): ") and exc.value.details["adapter"] == 1
    assert str(exc.value) == exc.value.message

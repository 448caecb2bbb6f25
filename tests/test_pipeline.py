"""run_merge publishes all or nothing: a failure while writing leaves no output and no temp folder."""

import pytest
from safetensors.torch import save_file

from merge_core import errors
from merge_core.pipeline import run_merge
from merge_core.spec import parse_spec
from tests.factories import write_adapter_folder


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

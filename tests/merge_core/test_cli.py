"""The CLI as a user runs it: a real subprocess, real files, one clear line on bad input."""

import json
import subprocess
import sys

import pytest

from support.factories import write_adapter_folder


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "merge_core.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def spec_file(tmp_path):
    a = write_adapter_folder(tmp_path / "a", rank=4, seed=1)
    b = write_adapter_folder(tmp_path / "b", rank=8, seed=2)
    spec = {
        "method": "do_merging",
        "adapters": [{"source": str(a)}, {"source": str(b), "weight": 0.5}],
        "output": {"dtype": "float16"},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_merge_writes_a_peft_folder(spec_file, tmp_path):
    result = cli("merge", str(spec_file), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "adapter_model.safetensors" in summary["files"]
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == 12 and config["lora_alpha"] == 12
    assert "merge" in result.stderr  # progress bar


def test_existing_output_is_not_overwritten(spec_file, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = cli("merge", str(spec_file), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "invalid_spec" in result.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"method": "nope", "adapters": [{"source": "/x"}]}, "unknown_method"),
        ({"method": "ties", "adapters": [{"source": "/x"}]}, "rank_required"),
        ({"method": "do_merging", "adapters": []}, "invalid_spec"),
        ({"method": "do_merging", "adapters": [{"source": "/nowhere"}]}, "source_not_found"),
        ({"method": "do_merging", "adapters": [{"source": "/x"}, {"source": "/x"}]}, "invalid_spec"),
        ({"method": "do_merging", "adapters": [{"source": "/x"}], "params": {"ortho_steps": -1}}, "invalid_params"),
        ({"method": "do_merging", "adapters": [{"source": "/x"}], "output": {"kind": "merged_model"}}, "invalid_spec"),
    ],
)
def test_bad_specs_give_one_line_and_no_traceback(tmp_path, spec, code):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = cli("merge", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and f"[{code}]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unreadable_spec_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    result = cli("merge", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_methods_lists_every_method_with_schemas():
    result = cli("methods", "--json")
    assert result.returncode == 0
    methods = {m["name"]: m for m in json.loads(result.stdout)}
    assert methods["do_merging"]["params_schema"]["properties"]["magnitude_axis"]["default"] == "out"
    assert methods["peft_linear"]["comparison_only"] is True


def test_methods_shows_the_scaling_choices_and_what_auto_is_per_method():
    result = cli("methods")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("scaling ")]
    assert len(lines) == len([line for line in result.stdout.splitlines() if not line.startswith(" ")])  # one per method
    assert all("number|auto|1/n|1/sqrt(n)|norm_match default='auto'" in line for line in lines)
    assert lines[0].endswith("Here 'auto' is norm_match (1 for task_type CAUSAL_LM adapters).")  # breadcrumbs, first by name


def test_service_fields_are_refused_by_name(tmp_path):
    """output.destination and output.private belong to the HTTP API's request; the CLI would ignore them."""
    spec = {"method": "do_merging", "adapters": [{"source": "/x"}], "output": {"destination": "hf://org/name", "private": False}}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = cli("merge", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "[invalid_spec]" in result.stderr and "output.destination, output.private: service fields" in result.stderr
    assert not (tmp_path / "out").exists()

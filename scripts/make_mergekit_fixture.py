"""Build tests/merge_core/fixtures/mergekit: a tiny Llama, three PEFT LoRAs, one mergekit YAML per shared
method (non-unit weights), and what mergekit 0.1.5 writes for each (only the tensors the LoRAs change;
the test checks that every other tensor is the base's). Run once where mergekit is installed in its own
environment (its pins clash with ours):

    python3 -m venv /work/mkenv && /work/mkenv/bin/pip install torch==2.13.0 && /work/mkenv/bin/pip install mergekit==0.1.5
    PYTHONPATH=. .venv/bin/python scripts/make_mergekit_fixture.py --mergekit-yaml /work/mkenv/bin/mergekit-yaml

tests/merge_core/test_mergekit.py compares ``loramerge merge`` against these files everywhere, and against
a live ``mergekit-yaml`` too where ``LORAMERGE_MERGEKIT_YAML`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "merge_core" / "fixtures" / "mergekit"

MODELS = """models:
  - model: base+lora_a
    parameters: {weight: 0.7%(a)s}
  - model: base+lora_b
    parameters: {weight: 1.3%(b)s}
  - model: base+lora_c
    parameters: {weight: 0.5%(c)s}
"""

# name -> (merge_method, shared parameters, per-model parameter suffix)
CASES = {
    "linear": ("linear", "", ""),
    "task_arithmetic": ("task_arithmetic", "parameters: {lambda: 0.8}\n", ""),
    "ties": ("ties", "parameters: {lambda: 1.1}\n", ", density: 0.4"),
    "ties_sum": ("ties", "parameters: {normalize: false}\n", ", density: 0.5"),
    "dare_linear": ("dare_linear", "parameters: {normalize: true}\n", ", density: 1.0"),
    "dare_ties": ("dare_ties", "", ", density: 1.0"),
    "breadcrumbs": ("breadcrumbs", "parameters: {lambda: 0.9}\n", ", density: 0.6, gamma: 0.05"),
    "breadcrumbs_ties": ("breadcrumbs_ties", "", ", density: 0.6, gamma: 0.05"),
}


def config_text(case: str) -> str:
    method, shared, suffix = CASES[case]
    models = MODELS % {"a": suffix, "b": suffix, "c": suffix}
    base = "" if method == "linear" else "base_model: base\n"  # mergekit's linear takes base_model as one more input
    return f"merge_method: {method}\n{base}dtype: float32\n{shared}{models}"


def build_inputs(root: Path) -> None:
    from support.tiny_llama import make_base, make_peft_adapter

    make_base(root / "base")
    make_peft_adapter(root / "base", root / "lora_a", seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    make_peft_adapter(
        root / "base", root / "lora_b", seed=2, r=8, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj", "up_proj"]
    )
    make_peft_adapter(root / "base", root / "lora_c", seed=3, r=2, lora_alpha=16, target_modules=["q_proj", "up_proj"])
    for folder in ("lora_a", "lora_b", "lora_c"):  # mergekit's base+lora loads the base from this name: a relative path
        config = json.loads((root / folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "base"
        (root / folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
        (root / folder / "README.md").unlink(missing_ok=True)
    (root / "base" / "generation_config.json").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit-yaml", default="mergekit-yaml")
    args = parser.parse_args()
    if FIXTURE.exists():
        shutil.rmtree(FIXTURE)
    (FIXTURE / "configs").mkdir(parents=True)
    (FIXTURE / "expected").mkdir()
    build_inputs(FIXTURE)
    base = load_file(str(FIXTURE / "base" / "model.safetensors"))
    manifest = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            config = FIXTURE / "configs" / f"{case}.yml"
            config.write_text(config_text(case))
            out = Path(tmp) / case
            subprocess.run(
                [
                    args.mergekit_yaml,
                    str(config),
                    str(out),
                    "--lora-merge-cache",
                    str(Path(tmp) / "cache"),
                    "--quiet",
                    "--no-write-model-card",
                ],
                cwd=FIXTURE,
                check=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            merged = {}
            for shard in sorted(out.glob("*.safetensors")):
                merged.update(load_file(str(shard)))
            # mergekit recomputes every tensor (linear: Σ w_i W / Σ w_i in float32), so the ones no LoRA touches
            # come back equal to the base within rounding: kept out of the fixture, their deviation recorded.
            drift = {k: float((merged[k] - base[k]).norm() / base[k].norm()) for k in merged if k in base}
            unchanged = sorted(k for k, d in drift.items() if d < 1e-6)
            changed = {k: v.contiguous() for k, v in merged.items() if k not in unchanged}
            save_file(changed, str(FIXTURE / "expected" / f"{case}.safetensors"))
            manifest[case] = {
                "files": sorted(p.name for p in out.iterdir()),
                "changed": sorted(changed),
                "unchanged": len(unchanged),
                "unchanged_max_rel_drift": max((drift[k] for k in unchanged), default=0.0),
                "dtypes": sorted({str(v.dtype) for v in merged.values()}),
            }
            print(case, len(changed), "tensors changed")
    (FIXTURE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()

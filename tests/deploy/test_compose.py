"""docker-compose.yml, checked without Docker (none on these machines): valid against the compose-spec
JSON schema (the copy check-jsonschema ships, pinned), every image pinned, a CPU-only profile that
reserves no GPU, a GPU profile that does, a worker healthcheck, the MinIO bucket made by minio-init,
and an .env.example that sets every variable the file requires. Nothing here builds or runs a container."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).parents[2]


def _schema() -> dict:
    origin = Path(importlib.util.find_spec("check_jsonschema").origin).parent
    return json.loads((origin / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _errors(document: dict) -> list[str]:
    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_is_valid_against_the_compose_spec(compose):
    assert _errors(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["ports"] = {"8000": 8000}  # a mapping where a list belongs
    broken["services"]["worker"]["restart_policy"] = "always"  # no such key
    assert len(_errors(broken)) >= 2  # the check does reject what compose would


def test_every_image_is_pinned(compose):
    for name, service in compose["services"].items():
        if "image" in service:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is not pinned"
        else:
            assert "build" in service, name


def test_cpu_profile_reserves_no_gpu_and_gpu_profile_does(compose):
    services = compose["services"]
    gpu, cpu = services["worker"], services["worker-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "deploy" not in cpu and cpu["environment"]["LORAMERGE_DEVICE"] == "cpu"
    assert "download.pytorch.org/whl/cpu" in cpu["build"]["args"]["TORCH_INDEX_URL"]
    for always in ("api", "webhooks", "redis", "minio", "minio-init"):
        assert "profiles" not in services[always], always  # started whichever profile is chosen


def test_workers_have_the_light_healthcheck(compose):
    for name in ("worker", "worker-cpu"):
        assert compose["services"][name]["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.healthcheck"]
    assert 'python", "-m", "worker.healthcheck"' in (ROOT / "docker" / "worker.Dockerfile").read_text()


def test_minio_init_makes_the_bucket(compose):
    init = compose["services"]["minio-init"]
    assert init["image"].startswith("minio/mc:RELEASE.")
    assert "mc mb --ignore-existing" in init["command"][0] and init["restart"] == "no"


def test_env_example_sets_every_required_variable():
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    used = set(re.findall(r"\$\{([A-Z0-9_]+)(?::?[-?])", text))
    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")
    )
    assert required and required <= set(example), required - set(example)
    assert used <= set(example), used - set(example)
    assert example["COMPOSE_PROFILES"] in {"gpu", "cpu"}
    assert ".env" in (ROOT / ".gitignore").read_text().split()

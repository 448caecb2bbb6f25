"""The API takes a mergekit configuration: as the ``mergekit`` field, or as the body with a YAML content type.

Validation runs before the job store is touched, so an app whose Redis is unreachable shows both sides:
a bad configuration is a 422 with the library's code; a good one gets as far as the store (503)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.schemas import MergeCreate
from app.submission import fingerprint
from jobs.settings import Settings

CONFIG = (Path(__file__).parents[1] / "merge_core" / "fixtures" / "mergekit" / "configs" / "ties.yml").read_text()
HUB = CONFIG.replace("base+lora_a", "acme/base+acme/lora-a").replace("base+lora_b", "acme/base+acme/lora-b")
HUB = HUB.replace("base+lora_c", "acme/base+acme/lora-c").replace("base_model: base", "base_model: acme/base")


@pytest.fixture
def client(tmp_path):
    settings = Settings(redis_url=f"unix://{tmp_path}/no-redis.sock", data_dir=tmp_path / "data")
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_the_field_and_the_content_type_give_one_request():
    field = MergeCreate.model_validate({"mergekit": HUB, "output": {"destination": "hf://acme/merged"}})
    assert field.method == "ties" and [a.source for a in field.adapters] == ["acme/lora-a", "acme/lora-b", "acme/lora-c"]
    assert field.output.kind == "merged_model" and field.output.base_model == "acme/base"
    assert field.output.destination == "hf://acme/merged"
    dumped = field.model_dump(mode="json")
    assert "mergekit" not in dumped and dumped["params"]["divisor"] == "weight_sum"  # the job stores the translated spec
    assert fingerprint(field) == fingerprint(MergeCreate.model_validate(dumped))  # same YAML, same Idempotency-Key match


@pytest.mark.parametrize("as_yaml", [False, True])
def test_a_good_configuration_reaches_the_store(client, as_yaml):
    if as_yaml:
        response = client.post("/v1/merges", content=HUB, headers={"Content-Type": "application/yaml"})
    else:
        response = client.post("/v1/merges", json={"mergekit": HUB})
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable", response.text


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (HUB.replace("merge_method: ties", "merge_method: slerp"), "unknown_method", "slerp"),
        (HUB + "tokenizer_source: base\n", "invalid_spec", "tokenizer_source"),
        (HUB + "whatever: 1\n", "invalid_spec", "whatever"),
        (HUB.replace("density: 0.4", "density: 0.4, epsilon: 0.1"), "invalid_params", "epsilon"),
        ("merge_method: [\n", "invalid_spec", "not valid YAML"),
        (HUB + "loramerge: {output: {kind: adapter}}\n", "rank_required", "rank"),
    ],
)
@pytest.mark.parametrize("as_yaml", [False, True])
def test_bad_configurations_are_422_with_the_library_code(client, body, code, words, as_yaml):
    if as_yaml:
        response = client.post("/v1/merges", content=body, headers={"Content-Type": "application/x-yaml"})
    else:
        response = client.post("/v1/merges", json={"mergekit": body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]


def test_a_configuration_and_a_spec_together_are_refused(client):
    response = client.post("/v1/merges", json={"mergekit": HUB, "method": "ties", "adapters": [{"source": "acme/x"}]})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_spec"
    assert "not both" in response.json()["error"]["message"]


def test_yaml_bodies_are_bounded(client):
    response = client.post("/v1/merges", content="#" * 70_000, headers={"Content-Type": "application/yaml"})
    assert response.status_code in (413, 422)
    assert response.json()["error"]["code"] in ("request_too_large", "invalid_request", "invalid_spec")

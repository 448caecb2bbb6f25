"""``scaling`` through the API: the rules are accepted (the request gets as far as the store, which is down
here: 503), a bad value is a 422 naming the choices, and /v1/methods shows them with each method's ``auto``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.schemas import MergeCreate
from app.submission import fingerprint
from jobs.records import JobResult
from jobs.settings import Settings
from merge_core.scaling import AUTO_SCALING, AUTO_SCALING_CAUSAL_LM, SCALING_CHOICES

SPEC = {"method": "tsv", "adapters": [{"source": "acme/lora-a"}, {"source": "acme/lora-b"}]}


@pytest.fixture
def client(tmp_path):
    settings = Settings(redis_url=f"unix://{tmp_path}/no-redis.sock", data_dir=tmp_path / "data")
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.mark.parametrize("scaling", [*SCALING_CHOICES, 0.3, None])
def test_every_rule_and_a_number_are_accepted(client, scaling):
    body = SPEC if scaling is None else {**SPEC, "params": {"scaling": scaling}}
    response = client.post("/v1/merges", json=body)
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable", response.text


@pytest.mark.parametrize(
    ("scaling", "words"),
    [("half", "'auto', '1/n', '1/sqrt(n)', 'norm_match' (got 'half')"), (500, "between -100 and 100"), ("1/N", "got '1/N'")],
)
def test_a_bad_scaling_is_a_422_that_names_the_choices(client, scaling, words):
    response = client.post("/v1/merges", json={**SPEC, "params": {"scaling": scaling}})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_params" and error["message"].startswith("tsv: scaling: must ") and words in error["message"]


def test_inside_do_merging_a_rule_goes_in_its_own_scaling(client):
    body = {**SPEC, "method": "do_merging", "params": {"merge": "tsv", "merge_params": {"scaling": "auto"}}}
    response = client.post("/v1/merges", json=body)
    assert response.status_code == 422 and "do_merging's own scaling" in response.json()["error"]["message"]


def test_methods_list_the_choices_and_what_auto_is(client):
    methods = {m["name"]: m for m in client.get("/v1/methods").json()["methods"]}
    assert {name: m["auto_scaling"] for name, m in methods.items()} == AUTO_SCALING
    assert {name: m["auto_scaling_causal_lm"] for name, m in methods.items()} == AUTO_SCALING_CAUSAL_LM
    schema = methods["tsv"]["params_schema"]["properties"]["scaling"]
    assert schema["default"] == "auto" and schema["anyOf"][1]["enum"] == list(SCALING_CHOICES)


def test_the_new_default_leaves_fingerprints_alone():
    """``fingerprint`` hashes the request as sent: params are not filled in with their defaults, so a request
    sent before scaling's default became "auto" still matches its Idempotency-Key (it was {} then and now)."""
    request = MergeCreate.model_validate(SPEC)
    assert request.params == {} and "scaling" not in request.model_dump_json()
    assert fingerprint(request) != fingerprint(MergeCreate.model_validate({**SPEC, "params": {"scaling": 1.0}}))


def test_a_job_s_summary_keeps_the_rule_as_text():
    summary = {"modules": 3, "scaling_requested": "auto", "scaling_rule": "1/sqrt(n)", "scaling_mean": 0.5}
    assert JobResult(uri="file:///r", files=[], summary=summary).summary == summary

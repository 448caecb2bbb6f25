"""Messages a person reads: a JSON syntax error placed in the body, our own checks without pydantic's
prefix, and a summary whose counts are whole numbers."""


def test_invalid_json_says_so_and_where(alice):
    response = alice.post(
        "/v1/merges", content=b'{"method": "ties", "adapters": [}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "not valid JSON" in error["message"] and error["message"].endswith("at character 32 (0-based)"), error["message"]
    assert error["message"].startswith("the body is not valid JSON")


def test_our_own_checks_read_without_pydantics_prefix(alice):
    spec = {"method": "ties", "adapters": [{"source": "a/b"}], "output": {"kind": "merged_model", "rank": 4}}
    error = alice.post("/v1/merges", json=spec).json()["error"]
    assert "output.base_model is required" in error["message"] and "Value error" not in error["message"], error

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


def test_a_local_folder_that_is_not_there_is_refused_at_submission(stack, alice):
    spec = {"method": "task_arithmetic", "adapters": [{"source": f"{stack.roots}/no-such-adapter"}]}
    response = alice.post("/v1/merges", json=spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "source_not_found" and "no-such-adapter" in error["message"]


def test_a_relative_path_is_not_taken_for_a_hub_id(stack, alice):
    folder = stack.roots / "rel" / "adapter-r4"
    folder.mkdir(parents=True, exist_ok=True)
    response = alice.post("/v1/merges", json={"method": "task_arithmetic", "adapters": [{"source": "rel/adapter-r4"}]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_source" and str(folder.resolve()) in error["message"], error

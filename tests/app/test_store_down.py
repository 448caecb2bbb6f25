"""With Redis unreachable the API answers 503 with a code and Retry-After, never a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from jobs.settings import Settings


def test_store_down_is_503_with_retry_after(tmp_path):
    settings = Settings(redis_url=f"unix://{tmp_path}/no-redis.sock", data_dir=tmp_path / "data")
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    spec = {"method": "task_arithmetic", "adapters": [{"source": "acme/lora"}]}
    for response in (client.get("/v1/merges"), client.post("/v1/merges", json=spec), client.get("/v1/merges/abc")):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
        assert response.headers["retry-after"] == "5"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200

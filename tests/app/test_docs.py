"""/docs and /redoc work without internet: every script, stylesheet and icon they name is served by
the app itself (no CDN), and answers 200."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from jobs.settings import Settings


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets_that_answer(tmp_path, page):
    settings = Settings(redis_url=f"unix://{tmp_path}/no-redis.sock", data_dir=tmp_path / "data")
    client = TestClient(create_app(settings))
    html = client.get(page)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html.text)  # the OpenAPI document Swagger UI loads
    assert urls, html.text
    remote = [u for u in urls if re.match(r"^(https?:)?//", u)]
    assert not remote, f"{page} loads from elsewhere: {remote}"
    for url in urls:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.content, url
    assert any(u.endswith(".js") for u in urls)

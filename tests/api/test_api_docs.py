"""``/api.html`` loads Swagger UI from the API itself: no CDN, every file it needs answers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings


def test_swagger_ui_assets_are_served_locally(pg_dsn: str, live_api: Callable[[Any], str]) -> None:
    url = live_api(create_app(ApiSettings(), pg_dsn))
    page = httpx.get(f"{url}/api.html", timeout=60)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and not [r for r in refs if "://" in r], refs  # nothing from another host
    for ref in refs:
        got = httpx.get(url + ref, timeout=60)
        assert got.status_code == 200 and len(got.content) > 1000, ref
    assert re.search(r"url: '/api'", page.text), page.text
    spec = httpx.get(f"{url}/api", timeout=60).json()
    assert spec["openapi"].startswith("3.1")  # Swagger UI 5 renders 3.1
    landing = httpx.get(f"{url}/", timeout=60)
    assert landing.status_code == 200, landing.text
    docs = [ln["href"] for ln in landing.json()["links"] if ln["rel"] == "service-doc"]
    assert docs == [f"{url}/api.html"], landing.json()["links"]
    bundle = httpx.get(f"{url}/api-docs-static/swagger-ui-bundle.js", timeout=60).text
    assert re.search(r'"5\.\d+\.\d+"', bundle)

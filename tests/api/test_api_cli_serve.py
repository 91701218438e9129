"""``tessera-stac serve``: uvicorn with the env-configured app factory, workers configurable."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.test_api_hostile import Served


def test_serve_starts_the_api_from_the_environment(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    server = Served(pg_dsn, tmp_path, {"TESSERA_STAC_API_TITLE": "served by the CLI"}, workers=2)
    try:
        url = server.wait().url
        health = httpx.get(url + "/healthz", timeout=60)  # it asks the database: slow under load
        assert health.status_code == 200 and health.json()["database"]["reachable"]
        assert httpx.get(url + "/").json()["title"] == "served by the CLI"
        assert httpx.get(url + "/data/x.txt").text == "hello"
    finally:
        server.stop()

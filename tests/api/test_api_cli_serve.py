"""``tessera-stac serve``: uvicorn with the env-configured app factory, workers configurable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tessera_stac.catalog.pgstac.cluster import free_port


def test_serve_starts_the_api_from_the_environment(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TESSERA_STAC_"))}
    env.update(
        {
            "TESSERA_STAC_DATABASE_URL": pg_dsn,
            "TESSERA_STAC_API_TITLE": "served by the CLI",
        }
    )
    cmd = [sys.executable, "-m", "tessera_stac.cli.main", "serve", "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*cmd, "--workers", "2", "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file, not an unread pipe that would block the server at 64 KiB
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(url + "/healthz", timeout=5)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.3)
        assert health.status_code == 200 and health.json()["database"]["reachable"]
        assert httpx.get(url + "/").json()["title"] == "served by the CLI"
        assert httpx.get(url + "/data/x.txt").text == "hello"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()

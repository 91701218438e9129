"""Database stopped mid-way: 503 JSON (fast, no hang), then normal answers after a restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tests.fixtures_api import HAND_COLLECTION, load_hand_items


@pytest.fixture
def own_cluster(open_tmp: Callable[[str], Path]) -> Iterator[Any]:
    """A cluster of our own, so the test can stop and start it."""
    from tessera_stac.catalog.pgstac.cluster import LocalCluster

    cluster = LocalCluster(open_tmp("outage"), dbname="outage", fast=True)
    cluster.init()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_database_outage_503_then_recovers(
    own_cluster: Any, live_api: Callable[[Any], str], tmp_path: Path
) -> None:
    dsn = own_cluster.dsn()
    load_hand_items(dsn, tmp_path)
    settings = ApiSettings(db_connect_timeout=2, db_min_conn=2)
    url = live_api(create_app(settings, dsn))
    search = {"collections": [HAND_COLLECTION]}
    assert len(httpx.post(url + "/search", json=search).json()["features"]) == 2

    own_cluster.stop()
    # every kind of route answers 503 JSON while the database is down; the client timeout is
    # the "no hang" check (the server must answer well before it)
    for method, path in [
        ("POST", "/search"),
        ("GET", "/collections"),
        ("GET", f"/collections/{HAND_COLLECTION}/items"),
        ("GET", "/"),
        ("GET", "/healthz"),
    ]:
        got = httpx.request(
            method, url + path, json=search if method == "POST" else None, timeout=15
        )
        assert got.status_code == 503, (path, got.text)
        body = got.json()
        assert body.get("code") == "ServiceUnavailable" or body["database"]["reachable"] is False
    # routes that do not need the database still work
    # (the first /api builds the OpenAPI document: seconds on a loaded machine)
    assert httpx.get(url + "/api", timeout=60).status_code == 200

    own_cluster.start()
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline:
        status = httpx.post(url + "/search", json=search, timeout=15).status_code
        if status == 200:
            break
        assert status == 503
        time.sleep(0.5)
    assert status == 200
    assert len(httpx.post(url + "/search", json=search).json()["features"]) == 2
    assert httpx.get(url + "/healthz").json()["database"]["reachable"] is True

"""Database restart under load: every answer is 200 or the documented 503 (+ Retry-After),
no connection is dropped without a response, and the API serves again by itself."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tests.api.test_api_outage import own_cluster  # noqa: F401 (fixture)
from tests.fixtures_api import HAND_COLLECTION, load_hand_items


def test_database_restart_under_load(
    own_cluster: Any,  # noqa: F811
    live_api: Callable[[Any], str],
    tmp_path: Path,
) -> None:
    dsn = own_cluster.dsn()
    load_hand_items(dsn, tmp_path)
    url = live_api(create_app(ApiSettings(db_connect_timeout=2, db_min_conn=4), dsn))
    search = {"collections": [HAND_COLLECTION]}
    statuses: Counter[int] = Counter()
    dropped: list[str] = []
    bad: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def hammer() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    got = client.post(url + "/search", json=search)
                except httpx.HTTPError as exc:
                    with lock:
                        dropped.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    statuses[got.status_code] += 1
                    if got.status_code == 503 and "retry-after" not in got.headers:
                        bad.append("503 without Retry-After")
                    if got.status_code not in (200, 503):
                        bad.append(f"{got.status_code}: {got.text[:200]}")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        own_cluster.stop()
        time.sleep(2)
        own_cluster.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.post(url + "/search", json=search, timeout=30).status_code == 200:
                break
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not dropped, dropped[:5]
    assert not bad, bad[:5]
    assert statuses[200] > 0 and statuses[503] > 0, statuses
    # after the restart the API serves again (without a restart of its own)
    assert httpx.post(url + "/search", json=search).status_code == 200

"""Request budgets against a live server (issue "One request must never take the service
down"): a hostile corpus over every tile and analysis route on real-size 128-band COGs, the
same process alive after each request, its peak resident memory under the declared bound; a
storm of heavy requests answered with 200/4xx/503 while a search still gets through.

The API runs as its own uvicorn process (one worker), so an OOM kill or a crash shows as a
dead pid, and its memory is read from ``/proc`` while the corpus runs.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.pgstac.load import load
from tests.api.test_api_hostile import Served
from tests.conftest import TEMPLATE_DB
from tests.memory import TreeWatch

WORLD_POLYGON = {
    "type": "Polygon",
    "coordinates": [[[-180, -85], [180, -85], [180, 85], [-180, 85], [-180, -85]]],
}
WORLD = {"type": "Feature", "properties": {}, "geometry": WORLD_POLYGON}
VECTORS = [("assets", "embeddings"), ("assets", "scales")]


@pytest.fixture(scope="module")
def tile_server(
    pg_cluster: Any, published_catalog: dict[str, Any]
) -> Iterator[tuple[Served, dict[str, Any]]]:
    """The API process over the two real-size published tiles (PCA basis stored), loaded with
    hrefs through its own ``/data``."""
    with pg_cluster.template_clone(TEMPLATE_DB, "budgets") as dsn:
        # requests end within 30 s (queue) + 60 s (run): the clients' 180 s never trip
        server = Served(dsn, published_catalog["root"], RUN_BOUND)
        try:
            server.wait()
            load(dsn, str(published_catalog["catalog"]), base_url=server.url + "/data")
            yield server, published_catalog["items"][0]
        finally:
            server.stop()


def _routes(item: dict[str, Any]) -> tuple[str, str]:
    collection, year = item["collection"], str(item["properties"]["start_datetime"])[:4]
    base = f"/tiles/collections/{collection}"
    return f"{base}/items/{item['id']}", f"{base}/years/{year}"


def hostile_corpus(item: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], set[int]]]:
    """(method, path, httpx kwargs, allowed statuses): sizes, zooms, bands, expressions,
    algorithms and their parameters, world-sized geometries, oversized query strings."""
    one, mosaic = _routes(item)
    w, s, e, n = item["bbox"]
    lon, lat = (w + e) / 2, (s + n) / 2
    inside = {"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon",
        "coordinates": [[[w + 0.01, s + 0.01], [e - 0.01, s + 0.01], [e - 0.01, n - 0.01],
                         [w + 0.01, s + 0.01]]],
    }}  # fmt: skip
    tile = f"{one}/tiles/WebMercatorQuad"
    pca = [*VECTORS, ("algorithm", "pca")]
    sim = [*VECTORS, ("algorithm", "similarity"),
           ("algorithm_params", json.dumps({"lon": lon, "lat": lat}))]  # fmt: skip
    too_big = {413}
    bad = {400}
    z14 = _tile_at(lon, lat, 14)
    corpus: list[tuple[str, str, dict[str, Any], set[int]]] = [
        # the reports, one by one
        ("POST", f"{one}/statistics", {"params": [*VECTORS, ("max_size", 20000)], "json": WORLD},
         too_big),
        ("GET", f"{one}/bbox/-180,-85,180,85/4000x4000.png", {"params": pca}, too_big),
        ("GET", f"{one}/preview.png", {"params": [*VECTORS, ("width", 20000),
                                                   ("height", 20000)]}, too_big),
        ("GET", f"{one}/bbox/{w},{s},{e},{n}/20000x20000.png", {"params": VECTORS}, too_big),
        ("GET", f"{tile}/-1/0/0.png", {"params": pca}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings"), ("bidx", 500)]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1,2,500")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings"), ("expression", "+".join(["b1"] * 3000))]},
         {413, 414}),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings"), ("expression", "+".join(["b1"] * 300))]},
         too_big),
        ("GET", f"{one}/statistics", {"params": [*VECTORS, ("max_size", 20000)]}, too_big),
        ("GET", f"{one}/asset_statistics", {"params": [*VECTORS, ("max_size", 20000)]}, too_big),
        # full-resolution statistics of every band: refused; a small overview of them: fine
        ("POST", f"{one}/statistics", {"params": VECTORS, "json": inside}, too_big),
        ("POST", f"{one}/statistics", {"params": [*VECTORS, ("max_size", 128)], "json": inside},
         {200}),
        # sizes
        ("GET", f"{one}/preview.png", {"params": pca}, too_big),  # 1024 px x 129 bands
        ("GET", f"{one}/preview.png", {"params": [*pca, ("max_size", 256)]}, {200}),
        ("GET", f"{one}/preview/2x999999.png", {"params": [("assets", "scales")]}, too_big),
        ("GET", f"{one}/bbox/{w},{s},{e},{n}.png", {"params": pca}, too_big),  # native 129 b
        ("GET", f"{one}/bbox/{w},{s},{e},{n}.png", {"params": [*pca, ("max_size", 300)]}, {200}),
        ("POST", f"{one}/feature.png", {"params": pca, "json": WORLD}, too_big),
        ("POST", f"{one}/feature/9000x9000.png", {"params": [("assets", "scales")],
                                                  "json": inside}, too_big),
        ("POST", f"{one}/feature.png", {"params": [("assets", "scales")],
                                        "content": "{not json"}, {400}),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [*pca, ("tilesize", 100000)]}, too_big),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}@4x.png", {"params": pca}, {400, 413}),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [*pca, ("buffer", "1e9")]}, {400, 422}),
        # zooms and tile indices
        ("GET", f"{tile}/99/0/0.png", {"params": pca}, bad),
        ("GET", f"{tile}/3/8/0.png", {"params": pca}, bad),
        ("GET", f"{tile}/3/-1/0.png", {"params": pca}, bad),
        ("GET", f"{one}/tiles/NoSuchMatrix/3/1/1.png", {"params": pca}, {404, 422}),
        ("GET", f"{mosaic}/tiles/WebMercatorQuad/3/5/3.png", {"params": pca}, too_big),
        ("GET", f"{mosaic}/tiles/WebMercatorQuad/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [*pca, ("items_limit", 100000), ("scan_limit", 10**9)]}, {200, 204, 404}),
        # bands, expressions, rendering junk
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=x")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "nosuchasset")]}, {404}),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("expression", "b1+b9")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("expression", "import os")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("expression", "b1/")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("rescale", "a,b")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("rescale", "nan,1")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("rescale", "1,2,3")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("colormap", "{bad")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "embeddings|bidx=1"), ("colormap_name", "nosuch")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [*VECTORS, ("algorithm", "nosuch")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [*VECTORS, ("algorithm", "similarity"), ("algorithm_params", "{x")]}, bad),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [*VECTORS, ("algorithm", "similarity"),
                     ("algorithm_params", json.dumps({"vector": [1] * 5000}))]}, {400, 413, 414}),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [*VECTORS, ("algorithm", "similarity"),
                     ("algorithm_params", json.dumps({"lon": 1e308, "lat": 0}))]}, {400, 404}),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "scales"), ("algorithm", "pca")]}, bad),
        ("GET", f"{one}/point/{lon},{lat}", {"params": [("assets", "embeddings|bidx=0")]}, bad),
        ("GET", f"{one}/point/1e308,{lat}", {"params": [("assets", "scales")]}, {400, 404}),
        # oversized query strings
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png",
         {"params": [("assets", "scales"), ("x", "a" * 20000)]}, {414}),
        # analysis routes: world-sized geometries, too many points
        # (the world meets the two published tiles only: within the zonal budget, answered)
        ("POST", "/embeddings/area", {"json": {"geometry": WORLD_POLYGON, "year": 2024}},
         {200, 413}),
        ("POST", "/embeddings/positions",
         {"json": {"year": 2024, "points": [{"lon": lon, "lat": lat}] * 20000}}, too_big),
        # the ordinary requests still work
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png", {"params": pca}, {200}),
        ("GET", f"{tile}/{z14[2]}/{z14[0]}/{z14[1]}.png", {"params": sim}, {200}),
        ("GET", f"{one}/info", {"params": VECTORS}, {200}),
        ("GET", f"{one}/point/{lon},{lat}", {"params": VECTORS}, {200}),
    ]  # fmt: skip
    return corpus


def _tile_at(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    import morecantile

    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, z)
    return t.x, t.y, t.z


@pytest.mark.slow  # a hostile corpus against a server process over real-size tiles
def test_hostile_tile_corpus_is_refused_cheaply_and_the_server_lives(
    tile_server: tuple[Served, dict[str, Any]],
) -> None:
    """Every answer < 500 within its time bound, the same pid after each, the errors in the
    API's shape naming the setting, and the process's peak memory under the declared bound."""
    server, item = tile_server
    pid = server.proc.pid
    watch = TreeWatch(pid)
    worst = 0.0
    wrong: list[Any] = []
    try:
        for method, path, kwargs, allowed in hostile_corpus(item):
            started = time.monotonic()
            got = httpx.request(method, server.url + path, timeout=120, **kwargs)
            worst = max(worst, time.monotonic() - started)
            label = (method, path[-40:], str(kwargs)[:160])
            assert server.proc.poll() is None, (label, server.stderr()[-2000:])
            if got.status_code not in allowed:
                wrong.append((label, got.status_code, got.text[:300]))
            elif got.status_code == 413 and "TESSERA_STAC_API_" not in got.json().get(
                "description", ""
            ):
                wrong.append((label, "413 without the setting", got.text[:300]))
            elif got.status_code >= 400 and not {"code", "description"} <= set(got.json()):
                wrong.append((label, "error shape", got.text[:300]))
    finally:
        peak = watch.stop().peak_one
    assert not wrong, "\n".join(map(str, wrong))
    assert server.proc.pid == pid and server.proc.poll() is None
    assert httpx.get(server.url + "/healthz").status_code == 200
    bound = ApiSettings().memory_bound_mb() * 2**20
    print(f"corpus: worst request {worst:.2f} s, peak RSS {peak / 2**20:.0f} MB "
          f"(bound {bound / 2**20:.0f} MB)")  # fmt: skip
    assert 0 < peak < bound, (peak, bound)


#: The storms' servers bound each admitted request's run (the default is 120 s) and refuse
#: after 10 s in the queue (the default 30 s only makes the storms wait longer: the same
#: queue-then-503 path, 20 s sooner)
RUN_BOUND = {
    "TESSERA_STAC_API_HEAVY_REQUEST_SECONDS": "60",
    "TESSERA_STAC_API_HEAVY_QUEUE_SECONDS": "10",
}


def storm_requests(
    item: dict[str, Any], tiles: int = 24, parts: int = 12
) -> list[tuple[str, str, dict[str, Any]]]:
    """``tiles`` similarity tiles and ``parts`` pairs of heavy part/statistics requests over
    ``item`` (by default 24 + 24)."""
    one, _ = _routes(item)
    w, s, e, n = item["bbox"]
    lon, lat = (w + e) / 2, (s + n) / 2
    heavy: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(tiles):
        x, y, z = _tile_at(w + (e - w) * (i % 6 + 0.5) / 6, s + (n - s) * (i // 6 + 0.5) / 4, 14)
        params = [*VECTORS, ("algorithm", "similarity"),
                  ("algorithm_params", json.dumps({"lon": lon, "lat": lat})),
                  ("rescale", "0,1"), ("colormap_name", "viridis")]  # fmt: skip
        heavy.append(("GET", f"{one}/tiles/WebMercatorQuad/{z}/{x}/{y}.png", {"params": params}))
    for i in range(parts):
        heavy.append(
            (
                "GET",
                f"{one}/bbox/{w},{s},{e},{n}.png",
                {"params": [*VECTORS, ("algorithm", "pca"), ("max_size", 500 - i)]},
            )
        )
        heavy.append(("GET", f"{one}/statistics",
                      {"params": [*VECTORS, ("max_size", 500 - i)]}))  # fmt: skip
    return heavy


@pytest.mark.slow  # a storm of heavy requests
def test_storm_of_heavy_requests_queues_or_refuses_and_search_gets_through(
    tile_server: tuple[Served, dict[str, Any]],
) -> None:
    """12 similarity tiles and 12 heavy part/statistics requests at once (12 for each of the
    2 heavy slots): only 200/4xx/503, no crash, memory under the bound; a search sent during
    the storm is answered before the storm is over (it never queues behind the heavy ones)."""
    server, item = tile_server
    heavy = storm_requests(item, tiles=12, parts=6)
    watch = TreeWatch(server.proc.pid)
    done: list[float] = []
    statuses: list[int] = []

    def send(request: tuple[str, str, dict[str, Any]]) -> int:
        method, path, kwargs = request
        status = httpx.request(method, server.url + path, timeout=180, **kwargs).status_code
        done.append(time.monotonic())
        return status

    try:
        with concurrent.futures.ThreadPoolExecutor(len(heavy) + 1) as pool:
            futures = [pool.submit(send, r) for r in heavy]
            time.sleep(0.5)
            search = httpx.get(server.url + "/search", params={"limit": 5}, timeout=60)
            searched = time.monotonic()
            statuses = [f.result() for f in futures]
    finally:
        peak = watch.stop().peak_one
    assert search.status_code == 200, search.text[:300]
    assert searched < max(done), "the search waited for the whole storm"
    assert set(statuses) <= {200, 413, 503}, statuses
    assert 200 in statuses, statuses
    assert server.proc.poll() is None
    assert peak < ApiSettings().memory_bound_mb() * 2**20, peak
    print(f"storm: {sorted(statuses)}; peak RSS {peak / 2**20:.0f} MB")


def test_budget_arithmetic_matches_rio_tiler_output_sizes(
    published_catalog: dict[str, Any],
) -> None:
    """The pre-read size estimate equals the array rio-tiler returns (within one pixel per
    side), so the budget refuses exactly what would have been allocated."""
    from rio_tiler.io import Reader

    from tessera_stac.api.budget import output_pixels

    path = Path(published_catalog["root"])
    scales = next(path.rglob("*scales*.tif"))
    with Reader(str(scales)) as src:
        shape = (src.dataset.height, src.dataset.width)
        for kwargs in (
            {"max_size": 300},
            {"width": 200},
            {"height": 77},
            {"width": 50, "height": 60},
        ):
            img = src.preview(**kwargs)
            expected = output_pixels(
                kwargs.get("width"), kwargs.get("height"), kwargs.get("max_size"), shape
            )
            assert abs(img.width * img.height - expected) <= img.width + img.height, kwargs


def test_mosaic_caps_pgstac_limits_in_the_query() -> None:
    """``items_limit`` past the budget is capped before titiler-pgstac sees it."""
    from tessera_stac.api.bounds import check_query

    settings = ApiSettings()
    query = [("items_limit", "100000"), ("scan_limit", "5"), ("time_limit", "600")]
    assert check_query(query, settings)
    assert dict(query) == {
        "items_limit": str(settings.tile_max_items),
        "scan_limit": "5",
        "time_limit": "5",
    }


def test_items_never_carry_server_paths(
    pg_dsn: str, live_api: Any, cog_catalog: dict[str, Any]
) -> None:
    """A local catalog loaded without ``--base-url``: served through the API's ``/data`` when
    its folder is the data dir (the hrefs resolve to the same bytes), withheld otherwise; no
    answer (item, items, search) ever holds the server's path."""

    root = str(Path(cog_catalog["root"]).resolve())
    load(pg_dsn, str(cog_catalog["catalog"]))
    item_id = sorted(cog_catalog["tiles"])[0]
    collection = cog_catalog["tiles"][item_id][0]["collection"]
    served = live_api(create_app(ApiSettings(data_dir=Path(root)), pg_dsn))
    bare = live_api(create_app(ApiSettings(), pg_dsn))
    for url in (served, bare):
        answers = [
            httpx.get(f"{url}/collections/{collection}/items/{item_id}"),
            httpx.get(f"{url}/collections/{collection}/items"),
            httpx.get(f"{url}/search", params={"ids": item_id}),
            httpx.post(f"{url}/search", json={"collections": [collection]}),
            httpx.get(f"{url}/collections"),
            httpx.get(f"{url}/collections/{collection}"),
        ]
        for got in answers:
            assert got.status_code == 200, got.text[:300]
            at = max(got.text.find(root), got.text.find("file://"))
            assert at < 0, got.text[max(0, at - 300) : at + 100]
    item = httpx.get(f"{served}/collections/{collection}/items/{item_id}").json()
    href = item["assets"]["embeddings"]["href"]
    assert href.startswith(served + "/data/"), href
    local = Path(root) / href.removeprefix(served + "/data/")
    assert httpx.get(href).content == local.read_bytes()
    withheld = httpx.get(f"{bare}/collections/{collection}/items/{item_id}").json()
    assert "embeddings" not in withheld["assets"]


@pytest.mark.slow
def test_budgets_hold_with_several_workers(
    pg_cluster: Any, published_catalog: dict[str, Any]
) -> None:
    """``tessera-stac serve --workers 2``: each worker has its own limiter, the storm answers
    200/413/503 only, and the whole process tree stays under 2 x the per-worker bound (plus
    uvicorn's supervisor)."""
    item = published_catalog["items"][0]
    with pg_cluster.template_clone(TEMPLATE_DB, "budgets_workers") as dsn:
        server = Served(dsn, published_catalog["root"], RUN_BOUND, workers=2)
        url = server.url
        try:
            load(dsn, str(published_catalog["catalog"]), base_url=url + "/data")
            server.wait()
            watch = TreeWatch(server.proc.pid)
            # 12 heavy requests: 3 for each of the 2 x heavy_concurrency slots, so both
            # workers run full at once (the storm test above sends 24 to one worker)
            heavy = storm_requests(item, tiles=4, parts=4)
            took: list[str] = []

            def send(r: tuple[str, str, dict[str, Any]]) -> int:
                t0 = time.monotonic()
                status = httpx.request(r[0], url + r[1], timeout=180, **r[2]).status_code
                took.append(f"{r[1].rsplit('/', 1)[-1]} {status} {time.monotonic() - t0:.1f}s")
                return status

            with concurrent.futures.ThreadPoolExecutor(len(heavy)) as pool:
                statuses = list(pool.map(send, heavy))
            print("\n".join(took))
            one, _ = _routes(item)
            # refused before it queues (the abandoned storm work may still hold the slots);
            # the timeout is only for a worker whose loop a loaded machine starves
            refused = httpx.get(f"{url}{one}/preview.png", params=[*VECTORS, ("width", 20000),
                                ("height", 20000)], timeout=30)  # fmt: skip
            watch.stop()
            assert refused.status_code == 413, refused.text
            assert set(statuses) <= {200, 413, 503} and 200 in statuses, statuses
            assert server.proc.poll() is None, server.stderr()[-2000:]
            bound = ApiSettings().memory_bound_mb() * 2**20
            print(
                f"2 workers: {sorted(statuses)}; tree peak {watch.peak_tree / 2**20:.0f} MB; "
                f"log {len(server.stderr())} characters"
            )
            assert watch.peak_tree < 2 * bound + 200 * 2**20, watch.peak_tree
        finally:
            server.stop()


async def _call_limiter(
    limiter: Any, method: str, path: str, query: str
) -> tuple[int, bytes, dict[bytes, bytes], float]:
    """One request through an ASGI ``limiter``: (status, body, headers, seconds)."""
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [],
             "query_string": query.encode()}  # fmt: skip
    t0 = time.monotonic()
    await limiter(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, dict(start["headers"]), time.monotonic() - t0


async def _until_locked(limiter: Any) -> None:
    """Until every slot of ``limiter`` is taken (bounded: a request that never takes one fails
    the test instead of hanging it)."""
    import asyncio

    async with asyncio.timeout(30):
        while not limiter._semaphore().locked():
            await asyncio.sleep(0.01)


def test_a_request_past_its_deadline_is_answered_503_and_keeps_its_slot() -> None:
    """``heavy_request_seconds``: a raster request that has not begun its answer in time gets
    503 + Retry-After naming the setting; its work still holds the slot until it ends (the next
    request waits for it, so memory stays bounded), and the slot is released exactly once.

    The abandoned work ends only when the test lets it (an event, not a sleep): the 503 arriving
    while it still runs can only be the deadline's, and the next request must still be waiting
    then, whatever the machine's load."""
    import asyncio
    import threading

    import anyio

    from tessera_stac.api.budget import HeavyRequestLimiter

    ran: list[str] = []
    work_may_end = threading.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/embeddings/area":
            # uncancellable, as GDAL reads are (bounded, so a broken limiter cannot hang the test)
            await anyio.to_thread.run_sync(work_may_end.wait, 60)
        ran.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    settings = ApiSettings(
        heavy_concurrency=1, heavy_queue_seconds=30, heavy_request_seconds=0.3, tile_cache_mb=0
    )
    limiter = HeavyRequestLimiter(slow_app, settings)

    async def call(path: str) -> tuple[int, bytes, dict[bytes, bytes], float]:
        return await _call_limiter(limiter, "POST", path, "")

    async def main() -> None:
        slow = asyncio.ensure_future(call("/embeddings/area"))
        await _until_locked(limiter)  # the slow request holds the only slot
        quick = asyncio.ensure_future(call("/embeddings/positions"))
        s1, b1, h1, _ = await slow  # answered while its work still runs: by the deadline
        assert s1 == 503 and b"TESSERA_STAC_API_HEAVY_REQUEST_SECONDS" in b1, b1
        assert h1[b"retry-after"] == b"10", h1
        await asyncio.sleep(0.1)  # room for a wrongly admitted quick request to run
        assert not quick.done() and ran == [], "the slot was freed before the abandoned work ended"
        work_may_end.set()
        s2, b2, _, _ = await quick  # the abandoned work ended, then the quick one ran
        assert s2 == 200 and b2 == b"done", (s2, b2)
        assert ran == ["/embeddings/area", "/embeddings/positions"]
        slots = limiter._semaphore()
        assert not slots.locked() and slots._value == 1  # released once each, no more

    asyncio.run(main())


def test_a_request_its_query_refuses_is_answered_at_once_while_every_slot_is_busy() -> None:
    """A request whose query string alone breaks a budget (``width`` x ``height``, ``tilesize``,
    ``rescale``) is refused before it queues: 413/400 at once while the only slot is held,
    instead of waiting up to ``heavy_queue_seconds`` for a slot only to be refused (the
    2-worker storm test timed out such a request under CI load).

    The busy request holds its slot until the test lets it go (an event, not a sleep): the
    refusals come while it is held, and a request within the budgets is still queued then."""
    import asyncio

    from tessera_stac.api.budget import HeavyRequestLimiter

    busy_may_end = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await busy_may_end.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    # a refusal that queued would wait for the slot the busy request never frees here, then
    # get 503 after heavy_queue_seconds, not 413/400
    settings = ApiSettings(heavy_concurrency=1, heavy_queue_seconds=30, tile_cache_mb=0)
    limiter = HeavyRequestLimiter(slow_app, settings)
    tile = "/tiles/collections/c/items/i/tiles/WebMercatorQuad/14/1/1.png"
    preview = "/tiles/collections/c/items/i/preview.png"

    async def call(path: str, query: str) -> tuple[int, bytes]:
        status, body, _, _ = await _call_limiter(limiter, "GET", path, query)
        return status, body

    async def main() -> None:
        busy = asyncio.ensure_future(call(preview, ""))
        await _until_locked(limiter)  # the busy request holds the only slot
        big = await call(preview, "width=20000&height=20000")
        wide = await call(tile, "tilesize=100000")
        odd = await call(tile, "rescale=0,nan")
        assert big[0] == 413 and b"TESSERA_STAC_API_TILE_MAX_OUTPUT_PIXELS" in big[1], big
        assert wide[0] == 413 and b"tilesize" in wide[1], wide
        assert odd[0] == 400 and b"rescale" in odd[1], odd
        assert not busy.done()  # all three answered while the slot was held
        # a request within the budgets waits for the slot, then runs
        small = asyncio.ensure_future(call(preview, "width=200&height=200"))
        await asyncio.sleep(0.1)
        assert not small.done(), "a request within the budgets ran while the slot was held"
        busy_may_end.set()
        assert (await small)[0] == 200
        assert (await busy)[0] == 200

    asyncio.run(main())


def test_the_heap_is_trimmed_once_the_worker_is_idle_and_not_before() -> None:
    """After the last raster request of a burst ends and ``idle_trim_seconds`` pass with none
    running, the limiter hands the freed heap back once (``release_free_memory``); a request
    running, or one arriving within the delay, puts it off. Events, not timings, decide what
    is running; the delay is only a lower bound."""
    import asyncio

    from tessera_stac.api.budget import HeavyRequestLimiter

    may_end: dict[str, asyncio.Event] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await may_end[scope["path"]].wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    settings = ApiSettings(heavy_concurrency=2, heavy_queue_seconds=30, tile_cache_mb=0)
    limiter = HeavyRequestLimiter(app, settings)
    limiter.idle_trim_seconds = 0.2

    async def main() -> None:
        a, b = "/embeddings/area", "/embeddings/positions"
        may_end[a], may_end[b] = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(_call_limiter(limiter, "POST", a, ""))
        second = asyncio.ensure_future(_call_limiter(limiter, "POST", b, ""))
        await _until_locked(limiter)  # both running
        may_end[a].set()
        assert (await first)[0] == 200
        await asyncio.sleep(0.5)  # past the delay, but the second still runs
        assert limiter.trims == 0, "trimmed while a raster request was running"
        may_end[b].set()
        assert (await second)[0] == 200
        # a new request within the delay puts the trim off until it too has ended
        may_end[a] = asyncio.Event()
        third = asyncio.ensure_future(_call_limiter(limiter, "POST", a, ""))
        await asyncio.sleep(0.5)
        assert limiter.trims == 0, "trimmed while a raster request was running"
        may_end[a].set()
        assert (await third)[0] == 200
        async with asyncio.timeout(30):
            while limiter.trims == 0:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert limiter.trims == 1, "one trim for one idle period"

    asyncio.run(main())


def test_release_free_memory_hands_freed_heap_back() -> None:
    """Many mid-sized blocks freed (kept by malloc's arena below its trim threshold) come back
    to the system after ``release_free_memory``: resident memory falls by most of them."""
    import ctypes

    from tessera_stac.api.budget import release_free_memory

    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    # 64 KiB blocks (under the mmap threshold: from the heap), every other one freed, so the
    # free space is holes between live blocks that the heap's top-trim alone cannot return
    blocks = [libc.malloc(64 * 1024) for _ in range(6000)]
    for p in blocks:
        libc.memset(p, 1, 64 * 1024)
    for p in blocks[::2]:
        libc.free(p)
    before = rss_mb()
    assert release_free_memory()
    after = rss_mb()
    for p in blocks[1::2]:
        libc.free(p)
    # ~190 MB was freed in holes; most of it must leave the resident set
    assert before - after > 100, (before, after)


_FAULTS = """
import resource, sys, threading
import numpy as np
from tessera_stac.api.budget import keep_freed_heap
keep = sys.argv[1] == "keep"
if keep:
    assert keep_freed_heap()

def tile():  # the sizes of a map tile's arrays: codes, window, scales, floats, mask
    arrays = [np.empty(n, dtype=np.uint8) for n in (8 << 20, 11 << 20, 1 << 18, 24 << 20, 8 << 20)]
    for a in arrays:
        a.fill(1)

def run():
    for _ in range(3):
        tile()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        tile()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)

worker = threading.Thread(target=run)  # requests run in worker threads (their own arenas)
worker.start()
worker.join()
"""


def test_keep_freed_heap_stops_each_request_faulting_its_arrays_in_again() -> None:
    """A tile's arrays allocated and freed over and over in a worker thread: with glibc's
    defaults every round maps and faults them in afresh; once ``keep_freed_heap`` has run,
    the next rounds reuse the freed memory (a fresh interpreter each, mallopt is global)."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert kept * 10 < default, (kept, default)


def test_block_cache_is_the_setting_and_inside_the_memory_bound() -> None:
    """Building the app sizes the reader kernel's block cache from ``block_cache_mb`` (0: none),
    and the declared memory bound of a worker counts it."""
    from tessera_stac.catalog.reader import tiff

    dsn = "postgresql://nobody@127.0.0.1:9/none"  # never connected: no lifespan runs
    try:
        create_app(ApiSettings(block_cache_mb=7), dsn)
        assert tiff.BLOCKS.budget == 7 * 2**20
        create_app(ApiSettings(block_cache_mb=0), dsn)
        assert tiff.BLOCKS.budget == 0
    finally:
        tiff.set_block_cache(0)
    with_cache = ApiSettings(block_cache_mb=300).memory_bound_mb()
    assert with_cache - ApiSettings(block_cache_mb=0).memory_bound_mb() == 300

"""Our API against bare stac-fastapi-pgstac on the same database, in the same run.

Both run as uvicorn subprocesses (one worker each) on one throwaway pgSTAC cluster holding a few
thousand synthetic items from the real item builder. Scenarios: ``/search`` with a bbox,
``/search`` with a CQL2 filter (proj:code + embedding:dimensions), and item GET; p50/p99 latency
and requests/s at concurrency 1 and 16, in alternating rounds (bare, ours, bare, ours) so drift
on this shared machine hits both. Target: ours/bare p50 <= 1.1.

Then the point query (``/embeddings/position``) p50 on a local full-size COG (128 bands,
1110x1110, written with the published profile). Target <= 20 ms.

Results: ``bench/results/api.json`` and ``api.md``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._support import (
    COLLECTION,
    collection,
    md_table,
    percentile,
    synthetic_items,
    temp_cluster,
    uvicorn_server,
    write_ndjson,
    write_results,
)

HERE = Path(__file__).resolve().parent
ITEMS = 3000
ROUNDS = 8  # short alternating batches: bare, ours, ours, bare, ... (drift hits both)
REQUESTS = {1: 20, 16: 64}  # per batch
POINT_COLLECTION = "tessera-embeddings-bench"

Request = tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]


def scenarios(items: list[dict[str, Any]], rng: random.Random) -> dict[str, Callable[[], Request]]:
    """Request factories per scenario (random but reproducible)."""
    ids = [i["id"] for i in items]

    def bbox() -> Request:
        lon, lat = rng.uniform(71.0, 74.5), rng.uniform(22.0, 25.5)
        box = f"{lon:.3f},{lat:.3f},{lon + 0.3:.3f},{lat + 0.3:.3f}"
        return ("GET", "/search", {"collections": COLLECTION, "bbox": box, "limit": 10}, None)

    def cql2() -> Request:
        zone = rng.choice(["EPSG:32642", "EPSG:32643", "EPSG:32644"])
        body = {
            "collections": [COLLECTION],
            "filter-lang": "cql2-json",
            "filter": {
                "op": "and",
                "args": [
                    {"op": "=", "args": [{"property": "proj:code"}, zone]},
                    {"op": ">=", "args": [{"property": "embedding:dimensions"}, 100]},
                ],
            },
            "limit": 10,
        }
        return ("POST", "/search", None, body)

    def item() -> Request:
        return ("GET", f"/collections/{COLLECTION}/items/{rng.choice(ids)}", None, None)

    return {"search_bbox": bbox, "search_filter": cql2, "item_get": item}


async def _drive(url: str, make: Callable[[], Request], count: int, concurrency: int) -> Any:
    import httpx

    latencies: list[float] = []
    errors = 0
    queue = [make() for _ in range(count)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                method, path, params, body = queue.pop()
                t0 = time.perf_counter()
                response = await client.request(method, path, params=params, json=body)
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, elapsed, errors


def drive(url: str, make: Callable[[], Request], count: int, concurrency: int) -> Any:
    """Send ``count`` requests with ``concurrency`` in flight; (latencies, seconds, errors)."""
    return asyncio.run(_drive(url, make, count, concurrency))


def summarise(latencies: list[float], seconds: float, errors: int) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "req_per_s": round(len(latencies) / seconds, 1),
        "requests": len(latencies),
        "errors": errors,
    }


def compare_search(dsn: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Run every scenario against both servers in alternating rounds."""
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    bare_env = {
        "PGUSER": parts.username or "postgres",
        "PGPASSWORD": parts.password or "",
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGDATABASE": parts.path.lstrip("/"),
    }
    ours_env = {"TESSERA_STAC_DATABASE_URL": dsn}
    pooled: dict[tuple[str, str, int], list[Any]] = {}
    with (
        uvicorn_server("stac_fastapi.pgstac.app:create_app", bare_env) as bare,
        uvicorn_server("tessera_stac.api.app:create_app_from_env", ours_env) as ours,
    ):
        servers = {"bare": bare, "ours": ours}
        for name in ("search_bbox", "search_filter", "item_get"):
            for conc, count in REQUESTS.items():
                for url in servers.values():
                    drive(url, scenarios(items, random.Random(1))[name], 20, conc)  # warm-up
                for rnd in range(ROUNDS):
                    order = list(servers.items())
                    if rnd % 2:
                        order.reverse()
                    for server, url in order:
                        # the same request sequence for both servers
                        make = scenarios(items, random.Random(7 + rnd))[name]
                        lat, secs, errs = drive(url, make, count, conc)
                        pooled.setdefault((name, server, conc), []).append((lat, secs, errs))
    results: dict[str, Any] = {}
    for (name, server, conc), runs in pooled.items():
        lat = [x for r in runs for x in r[0]]
        secs = sum(r[1] for r in runs)
        errs = sum(r[2] for r in runs)
        results.setdefault(name, {}).setdefault(f"c{conc}", {})[server] = summarise(lat, secs, errs)
    for per_conc in results.values():
        for row in per_conc.values():
            row["ratio_p50"] = round(row["ours"]["p50_ms"] / row["bare"]["p50_ms"], 3)
            row["ratio_rps"] = round(row["bare"]["req_per_s"] / row["ours"]["req_per_s"], 3)
    return results


def write_point_tile(folder: Path) -> dict[str, Any]:
    """A full-size 128-band tile (published profile) + scales, and its item."""
    import numpy as np
    import rasterio
    from affine import Affine

    from tessera_stac.catalog.model import GridCell
    from tessera_stac.catalog.profile import EMBEDDINGS

    cell = GridCell(72.05, 23.05)
    height = width = 1110
    transform = Affine(10.0, 0.0, 605000.0, 0.0, -10.0, 2555000.0)
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    base = np.linspace(-100, 100, width, dtype=np.float32)
    codes = (base[None, None, :] + rng.normal(0, 8, (EMBEDDINGS.count, height, 1))).astype(np.int8)
    common = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "crs": f"EPSG:{cell.utm_epsg}",
        "transform": transform,
        "tiled": True,
        "blockxsize": EMBEDDINGS.blocksize,
        "blockysize": EMBEDDINGS.blocksize,
        "compress": EMBEDDINGS.compress,
    }
    with rasterio.open(
        folder / "embeddings.tif",
        "w",
        dtype="int8",
        count=EMBEDDINGS.count,
        nodata=-128,
        interleave="pixel",
        **common,
    ) as dst:
        dst.write(codes)
    scales = rng.uniform(0.03, 0.1, (1, height, width)).astype(np.float32)
    with rasterio.open(
        folder / "scales.tif", "w", dtype="float32", count=1, nodata=float("nan"), **common
    ) as dst:
        dst.write(scales)
    item = synthetic_items(1, (2024,))[0]
    item["id"] = f"{cell.name}_2024"
    item["collection"] = POINT_COLLECTION
    west, south, east, north = cell.bounds
    item["bbox"] = [west, south, east, north]
    item["geometry"] = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    for key in ("embeddings", "scales"):
        item["assets"][key]["href"] = str(folder / f"{key}.tif")
    return item


def point_query(dsn: str, tmp: Path) -> dict[str, Any]:
    """p50/p99 of /embeddings/position on the local COG (concurrency 1)."""
    from pyproj import Transformer

    from tessera_stac.catalog.pgstac.load import load

    item = write_point_tile(tmp / "tile")
    coll = {**collection(), "id": POINT_COLLECTION}
    load(dsn, str(write_ndjson(tmp / "point.ndjson", [coll, item])))
    back = Transformer.from_crs("EPSG:32643", "EPSG:4326", always_xy=True)
    rng = random.Random(3)

    def make() -> Request:
        x = 605000 + rng.uniform(300, 10800)
        y = 2555000 - rng.uniform(300, 10800)
        lon, lat = back.transform(x, y)
        params = {"lon": lon, "lat": lat, "year": 2024, "collection": POINT_COLLECTION}
        return ("GET", "/embeddings/position", params, None)

    with uvicorn_server(
        "tessera_stac.api.app:create_app_from_env", {"TESSERA_STAC_DATABASE_URL": dsn}
    ) as url:
        drive(url, make, 5, 1)
        first, _, _ = drive(url, make, 60, 1)  # mostly first touches of 256x256 blocks
        lat, secs, errs = drive(url, make, 300, 1)
    return {
        "warm": summarise(lat, secs, errs),
        "first_touch_p50_ms": round(percentile(first, 50) * 1000, 2),
        "tile": "1110x1110x128 int8 ZSTD blocks 256 (published profile) + float32 scales",
    }


def main() -> None:
    import tempfile

    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        dsn = cluster.dsn()
        items = synthetic_items(ITEMS)
        from tessera_stac.catalog.pgstac.load import load

        load(dsn, str(write_ndjson(tmp / "items.ndjson", [collection(), *items])))
        results = {
            "items": len(items),
            "rounds": ROUNDS,
            "requests": REQUESTS,
            "search": compare_search(dsn, items),
            "point_query": point_query(dsn, tmp),
        }
    write_results("api", results, markdown(results))


def markdown(results: dict[str, Any]) -> str:
    """The results as a short Markdown table."""
    lines = [
        "# API benchmark: tessera-stac vs bare stac-fastapi-pgstac",
        "",
        f"{results['items']} items, same database and run, {results['rounds']} alternating "
        "batches per scenario (order flipped each batch), 1 uvicorn worker each, on a shared "
        "2-core machine (other jobs running: expect noise). Target: ours/bare p50 <= 1.1.",
        "",
        *md_table(
            ("scenario", "conc", "bare p50 / p99 ms", "ours p50 / p99 ms", "bare req/s",
             "ours req/s", "p50 ratio"),
            [
                (name, conc[1:], f"{row['bare']['p50_ms']} / {row['bare']['p99_ms']}",
                 f"{row['ours']['p50_ms']} / {row['ours']['p99_ms']}",
                 row["bare"]["req_per_s"], row["ours"]["req_per_s"], row["ratio_p50"])
                for name, per_conc in results["search"].items()
                for conc, row in per_conc.items()
            ],
        ),
    ]  # fmt: skip
    point = results["point_query"]
    lines += [
        "",
        f"Point query (/embeddings/position, local COG, {point['tile']}): p50 "
        f"{point['warm']['p50_ms']} ms, p99 {point['warm']['p99_ms']} ms, "
        f"{point['warm']['req_per_s']} req/s (target p50 <= 20 ms); first touch of a block p50 "
        f"{point['first_touch_p50_ms']} ms.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

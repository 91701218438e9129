"""Memory of one API worker under large and mixed requests, with the request bounds on.

One uvicorn worker (a subprocess; its RSS sampled from /proc every 20 ms) serves a full-size
tile (1110x1110x128 int8 + float32 scales, the published profile) and 3,000 synthetic items.

* Per ``/embeddings/area`` request over the whole tile (1.2 M pixels, under the default
  4 M budget): peak RSS above the idle worker, ours (read in strips of
  ``zonal_block_pixels`` = 262,144) against the reference - the same server reading each tile
  in one window (``ZONAL_BLOCK_PIXELS`` = 100 M, what the API did before the bounds) - measured
  in the same run. Declared memory: ``zonal_block_pixels`` x ~1 KB.
* Mixed load (search with bbox, 50-point batches, small areas, whole-tile areas; concurrency
  4): peak and final RSS of the worker. Target: below 500 MB.

Results: ``bench/results/hostile.json`` and ``hostile.md``.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from bench._support import (
    COLLECTION,
    collection,
    synthetic_items,
    temp_cluster,
    uvicorn_server,
    write_ndjson,
)
from bench.bench_api import POINT_COLLECTION, Request, drive, write_point_tile

HERE = Path(__file__).resolve().parent
FACTORY = "tessera_stac.api.app:create_app_from_env"
TILE = (0.0, 0.0, 0.0, 0.0)  # the cell the tile's item is placed on (fit_item)
BYTES_PER_PIXEL = 1024  # declared: codes 128 B + float32 vector 512 B + masks/sums


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def server_pid(url: str) -> int:
    """The pid of the uvicorn process serving ``url`` (from its command line)."""
    port = url.rsplit(":", 1)[1]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"uvicorn" in argv and port.encode() in argv:
            return int(entry)
    raise RuntimeError(f"no uvicorn process on port {port}")


class Sampler:
    """Peak RSS of a process while the ``with`` block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def area_request(geometry: dict[str, Any]) -> Request:
    body = {"geometry": geometry, "year": 2024, "collection": POINT_COLLECTION}
    return ("POST", "/embeddings/area", None, body)


def fit_item(item: dict[str, Any]) -> dict[str, Any]:
    """The item of ``write_point_tile`` placed on the 0.1° cell holding its raster's centre
    (its bbox and geometry are the cell's), so points and areas find it."""
    from pyproj import Transformer

    from tessera_stac.catalog.model import GridCell

    global TILE
    back = Transformer.from_crs("EPSG:32643", "EPSG:4326", always_xy=True)
    lon, lat = back.transform(605000 + 5550, 2555000 - 5550)  # raster centre (bench_api)
    cell = GridCell.containing(lon, lat)
    west, south, east, north = cell.bounds
    TILE = (west, south, east, north)
    item["bbox"] = [west, south, east, north]
    item["geometry"] = box(west, south, east, north)
    item["id"] = f"{cell.name}_2024"
    return item


def measure(dsn: str, env: dict[str, str]) -> dict[str, Any]:
    """Per-request area peak and mixed-load RSS of one worker with ``env``."""
    import httpx

    rng = random.Random(7)
    west, south, east, north = TILE
    whole = box(west + 0.001, south + 0.001, east - 0.001, north - 0.001)

    def mixed() -> Request:
        kind = rng.choice(["search", "points", "small", "whole"])
        if kind == "search":
            lon, lat = rng.uniform(71.0, 74.0), rng.uniform(22.0, 25.0)
            bbox = f"{lon:.3f},{lat:.3f},{lon + 0.3:.3f},{lat + 0.3:.3f}"
            return ("GET", "/search", {"collections": COLLECTION, "bbox": bbox}, None)
        if kind == "points":
            points = [
                {"lon": rng.uniform(west + 0.01, east - 0.01), "lat": rng.uniform(south, north)}
                for _ in range(50)
            ]
            body = {"points": points, "year": 2024, "collection": POINT_COLLECTION}
            return ("POST", "/embeddings/positions", None, body)
        if kind == "small":
            lon, lat = rng.uniform(west, east - 0.02), rng.uniform(south, north - 0.02)
            return area_request(box(lon, lat, lon + 0.02, lat + 0.02))
        return area_request(whole)

    with uvicorn_server(FACTORY, {"TESSERA_STAC_DATABASE_URL": dsn, **env}) as url:
        pid = server_pid(url)
        # warm up imports, GDAL and the dataset handles with a point, not an area (freed
        # arrays stay in the allocator: only a fresh worker's first area shows its peak)
        point = {
            "lon": (west + east) / 2,
            "lat": (south + north) / 2,
            "year": 2024,
            "collection": POINT_COLLECTION,
        }
        warm = httpx.get(url + "/embeddings/position", params=point, timeout=60)
        assert warm.status_code == 200, warm.text
        idle = rss_mb(pid)
        with Sampler(pid) as sampler:
            got = httpx.post(url + "/embeddings/area", json=area_request(whole)[3], timeout=300)
            assert got.status_code == 200, got.text
        pixels = got.json()["count"]
        peaks = [round(sampler.peak - idle, 1)]
        before = rss_mb(pid)
        with Sampler(pid) as sampler:
            latencies, seconds, errors = drive(url, mixed, 120, 4)
        return {
            "area_pixels": pixels,
            "area_peak_above_idle_mb": peaks,
            "mixed": {
                "requests": len(latencies),
                "errors": errors,
                "seconds": round(seconds, 1),
                "rss_before_mb": round(before, 1),
                "rss_peak_mb": round(sampler.peak, 1),
                "rss_after_mb": round(rss_mb(pid), 1),
            },
        }


def main() -> None:
    import tempfile

    from tessera_stac.catalog.pgstac.load import load

    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        dsn = cluster.dsn()
        item = fit_item(write_point_tile(tmp / "tile"))
        coll = {**collection(), "id": POINT_COLLECTION}
        objs = [collection(), *synthetic_items(3000), coll, item]
        load(dsn, str(write_ndjson(tmp / "items.ndjson", objs)))
        ours = measure(dsn, {})
        reference = measure(dsn, {"TESSERA_STAC_API_ZONAL_BLOCK_PIXELS": "100000000"})
    block = 262_144
    results = {
        "ours": ours,
        "reference_one_window_per_tile": reference,
        "declared_mb_per_request": round(block * BYTES_PER_PIXEL / 2**20, 1),
        "ratio_area_peak": round(
            ours["area_peak_above_idle_mb"][0] / max(1.0, reference["area_peak_above_idle_mb"][0]),
            3,
        ),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "hostile.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "hostile.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    """The results as a short Markdown summary."""
    ours, ref = results["ours"], results["reference_one_window_per_tile"]
    return "\n".join(
        [
            "# One API worker's memory under large and mixed requests",
            "",
            f"Whole-tile `/embeddings/area` ({ours['area_pixels']} pixels, 128 bands), peak RSS "
            "above the idle worker (first area of a fresh worker):",
            "",
            "| server | peak above idle (MB) | mixed load peak / after (MB) | errors |",
            "|---|---|---|---|",
            f"| ours (strips of 262,144 px) | {ours['area_peak_above_idle_mb']} | "
            f"{ours['mixed']['rss_peak_mb']} / {ours['mixed']['rss_after_mb']} | "
            f"{ours['mixed']['errors']} |",
            f"| reference (one window per tile) | {ref['area_peak_above_idle_mb']} | "
            f"{ref['mixed']['rss_peak_mb']} / {ref['mixed']['rss_after_mb']} | "
            f"{ref['mixed']['errors']} |",
            "",
            f"Declared memory per area request: {results['declared_mb_per_request']} MB; "
            f"ours/reference peak ratio {results['ratio_area_peak']}. Mixed load: "
            f"{ours['mixed']['requests']} requests (search, 50-point batches, small and "
            "whole-tile areas) at concurrency 4; target: worker below 500 MB. Load average "
            f"{results['load_average']} (shared 2-core machine).",
            "",
        ]
    )

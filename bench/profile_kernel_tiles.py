"""Profile of the API's map tiles through the reader kernel (bench_kernel_tiles' files and
tiles), and a snapshot of every tile's bytes to check a change leaves the pixels as they were.

Run with ``python -m bench.profile_kernel_tiles``. Writes
``bench/results/kernel_tiles_profile.txt``: pyinstrument's view of the z14 tiles of each
scenario (item PCA, year mosaic PCA, year mosaic similarity), every tile requested twice and
the second request profiled.

``TESSERA_STAC_TILE_SNAPSHOT=DIR``: also fetch every tile of the bench (z12-z15) and a few
more (PNG and ``.npy``), and write them to ``DIR``; when ``DIR`` already holds a snapshot,
compare byte for byte instead and report the tiles that differ.

How: uvicorn serves the app in *this* process's main thread (as ``profile_cold``); sync
routes and dependencies run inline (FastAPI's thread pool replaced by a direct call) and
rio-tiler's per-asset / per-item threads are off (``RIO_TILER_MAX_THREADS=1``), so the
request's whole stack is sampled in one thread. The kernel's block decoding keeps its own
small thread pool (shown as waiting).
"""

from __future__ import annotations

import os

os.environ.setdefault("RIO_TILER_MAX_THREADS", "1")
os.environ.setdefault("MOSAIC_CONCURRENCY", "1")

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._support import COLLECTION, add_profiling, free_port, temp_cluster

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    import fastapi.routing
    import httpx
    import starlette.concurrency
    import uvicorn
    from pyinstrument import Profiler

    from bench.bench_kernel_tiles import PER_ZOOM, QUERY, WINDOW, on_cog, tiles_near
    from bench.bench_tiles import CORNER, YEAR, load_tiles
    from tessera_stac.api.app import create_app
    from tessera_stac.api.settings import ApiSettings
    from tessera_stac.api.tiles import tile_urls

    async def inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    fastapi.routing.run_in_threadpool = inline  # type: ignore[assignment]
    starlette.concurrency.run_in_threadpool = inline  # type: ignore[assignment]
    snapshot = os.environ.get("TESSERA_STAC_TILE_SNAPSHOT")
    out: list[str] = []
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dsn = cluster.dsn()
        items, _ = load_tiles(root, dsn, WINDOW)
        app = create_app(ApiSettings(tile_cache_mb=0), dsn)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        profiles: dict[str, Profiler] = {}
        current: dict[str, str | None] = {"name": None}

        def profiler_for(scope: Any) -> Profiler | None:
            """The profiler of the scenario being profiled (None between scenarios)."""
            name = current["name"]
            if name is None:
                return None
            return profiles.setdefault(name, Profiler(interval=0.001, async_mode="enabled"))

        add_profiling(app, profiler_for)
        item = items[1]
        item_lon = (item["bbox"][0] + item["bbox"][2]) / 2
        item_lat = (item["bbox"][1] + item["bbox"][3]) / 2
        times: dict[str, list[float]] = {}

        def tiles_of(name: str, z: int, n: int = PER_ZOOM) -> list[Any]:
            if name == "item":
                near = tiles_near((item_lon + 72.0) / 2, (item_lat + 21.8) / 2, z, 25)
                return on_cog(item["assets"]["embeddings"]["href"], near)[:n]
            return tiles_near(*CORNER, z, n)

        def client() -> None:
            try:
                while not server.started:
                    time.sleep(0.05)
                http = httpx.Client(timeout=600)
                vector_of = {"lon": QUERY[0], "lat": QUERY[1], "year": YEAR}
                http.get(f"{base}/embeddings/position", params=vector_of).raise_for_status()
                templates = {
                    "item": tile_urls(base, COLLECTION, "pca", item_id=item["id"])["xyz"],
                    "mosaic": tile_urls(base, COLLECTION, "pca", year=YEAR)["xyz"],
                    "similarity": tile_urls(
                        base, COLLECTION, "similarity", year=YEAR, lon=QUERY[0], lat=QUERY[1]
                    )["xyz"],
                }

                def url(template: str, tile: Any, fmt: str = "png") -> str:
                    return (
                        template.replace("{z}", str(tile.z))
                        .replace("{x}", str(tile.x))
                        .replace("{y}", str(tile.y))
                        .replace(".png?", f".{fmt}?")
                    )

                for name, template in templates.items():
                    tiles = tiles_of(name, 14)
                    for tile in tiles:  # warm
                        http.get(url(template, tile)).raise_for_status()
                    current["name"] = name
                    for tile in tiles:
                        start = time.perf_counter()
                        http.get(url(template, tile)).raise_for_status()
                        times.setdefault(name, []).append(time.perf_counter() - start)
                    current["name"] = None
                if snapshot:
                    check_snapshot(Path(snapshot), http, templates, url, tiles_of, out)
            finally:
                current["name"] = None
                server.should_exit = True

        thread = threading.Thread(target=client)
        thread.start()
        server.run()
        thread.join()
        out.append(f"load average {[round(v, 2) for v in os.getloadavg()]}")
        for name, profiler in profiles.items():
            ms = ", ".join(f"{t * 1000:.0f}" for t in times.get(name, []))
            out.append(f"===== {name} z14 ({ms} ms, client side, profiled)")
            out.append(profiler.output_text(unicode=False, color=False, show_all=False))
    text = "\n".join(out)
    (RESULTS / "kernel_tiles_profile.txt").write_text(text)
    print(text)


def check_snapshot(
    folder: Path, http: Any, templates: dict[str, str], url: Any, tiles_of: Any, out: list[str]
) -> None:
    """Write (first run) or compare (later runs) every tile's PNG and ``.npy`` bytes."""
    from bench.bench_kernel_tiles import ZOOMS

    compare = folder.exists() and any(folder.iterdir())
    folder.mkdir(parents=True, exist_ok=True)
    same = differ = 0
    for name, template in templates.items():
        for z in ZOOMS:
            for tile in tiles_of(name, z, 9):
                for fmt in ("png", "npy"):
                    got = http.get(url(template, tile, fmt))
                    body = f"{got.status_code}\n".encode() + got.content
                    path = folder / f"{name}-{tile.z}-{tile.x}-{tile.y}.{fmt}"
                    if not compare:
                        path.write_bytes(body)
                    elif path.read_bytes() == body:
                        same += 1
                    else:
                        differ += 1
                        out.append(f"DIFFERS: {path.name}")
    if compare:
        out.append(f"snapshot {folder}: {same} tiles identical, {differ} differ")
    else:
        out.append(f"snapshot written to {folder}")


if __name__ == "__main__":
    main()

"""A fresh server's first map tiles against its warm ones (the wait of a map's first view).

Run with ``python -m bench bench_cold_tiles``. Writes ``bench/results/cold_tiles.json`` and
``.md``.

The real-size tiles of ``bench_tiles`` are loaded into a throwaway pgSTAC; for each layer (an
item's PCA tiles, the year mosaic's PCA tiles) and zoom (12, 14), ``SERVERS`` freshly started
servers (uvicorn, the API's tile cache off) are each asked for ``TILES`` neighbouring tiles in
turn by one client: the first tile, the second, and the p50 of the rest (warm: each a tile the
server has not rendered, on files it has opened). The ratio first / warm is what a new map
view pays over a panned one. No reference tool: the warm tile of the same server in the same
run is the reference.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._support import COLLECTION, md_table, temp_cluster, uvicorn_server, write_results

SERVERS = int(os.environ.get("TESSERA_STAC_BENCH_COLD_SERVERS", "3"))
TILES = 8
ZOOMS = (14, 12)


def one_server(env: dict[str, str], urls: dict[str, str], tiles: list[Any]) -> list[float]:
    """Milliseconds of each tile, in order, from a freshly started server."""
    import httpx

    times = []
    with uvicorn_server("tessera_stac.api.app:create_app_from_env", env) as url:
        client = httpx.Client(timeout=300)
        template = urls["xyz"].replace("{base}", url)
        for tile in tiles:
            start = time.perf_counter()
            client.get(template.format(z=tile.z, x=tile.x, y=tile.y)).raise_for_status()
            times.append(round((time.perf_counter() - start) * 1000, 1))
        client.close()
    return times


def main() -> None:
    from bench.bench_kernel_tiles import WINDOW, on_cog, tiles_near
    from bench.bench_tiles import YEAR, load_tiles
    from tessera_stac.api.tiles import tile_urls

    load_before = [round(v, 2) for v in os.getloadavg()]
    rows = []
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        dsn = cluster.dsn()
        items, _ = load_tiles(Path(tmpdir), dsn, WINDOW)
        env = {"TESSERA_STAC_DATABASE_URL": dsn, "TESSERA_STAC_API_TILE_CACHE_MB": "0"}
        item = items[1]
        lon = (item["bbox"][0] + item["bbox"][2]) / 2
        lat = (item["bbox"][1] + item["bbox"][3]) / 2
        layers = {
            "item": tile_urls("{base}", COLLECTION, "pca", item_id=item["id"]),
            "mosaic": tile_urls("{base}", COLLECTION, "pca", year=YEAR),
        }
        for zoom in ZOOMS:
            near = tiles_near((lon + 72.0) / 2, (lat + 21.8) / 2, zoom, 4 * TILES)
            tiles = on_cog(item["assets"]["embeddings"]["href"], near, TILES)
            for layer, urls in layers.items():
                runs = [one_server(env, urls, tiles) for _ in range(SERVERS)]
                first = statistics.median(r[0] for r in runs)
                second = statistics.median(r[1] for r in runs)
                warm = statistics.median(v for r in runs for v in r[2:])
                rows.append(
                    {
                        "layer": layer,
                        "zoom": zoom,
                        "runs_ms": runs,
                        "first_ms": first,
                        "second_ms": second,
                        "warm_p50_ms": round(warm, 1),
                        "first_over_warm": round(first / warm, 2),
                        "second_over_warm": round(second / warm, 2),
                    }
                )
    results = {
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "servers": SERVERS,
        "tiles": TILES,
        "rows": rows,
    }
    write_results("cold_tiles", results, markdown(results))


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# A fresh server's first map tiles (bench/bench_cold_tiles.py)",
        "",
        f"PCA tiles of one item and of the year mosaic, real-size tiles; {r['servers']} freshly "
        f"started servers per row, each asked for {r['tiles']} neighbouring tiles in turn (tile "
        "cache off): medians over the servers of the first and second tile, and the p50 of the "
        f"others (warm). {r['cpus']} shared cores; load average before "
        f"{r['load_average_before']}, after {r['load_average_after']}.",
        "",
        *md_table(
            ("layer", "zoom", "first ms", "second ms", "warm p50 ms", "first / warm",
             "second / warm"),
            [
                (row["layer"], row["zoom"], row["first_ms"], row["second_ms"],
                 row["warm_p50_ms"], row["first_over_warm"], row["second_over_warm"])
                for row in r["rows"]
            ],
        ),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

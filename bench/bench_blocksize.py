"""The COG block size, measured: 16, 32, 64 (ours) and 128 px blocks for points, windows,
zonal reads, size.

Run with ``python -m bench bench_blocksize``. Writes ``bench/results/blocksize.json`` and ``.md``.

The 4 real-size tiles of ``bench_join`` (published once, cached) are re-encoded by GDAL's COG
driver at each block size with the publisher's codec, predictor and level and the same
overviews (``OVERVIEWS=FORCE_USE_EXISTING``), so only the block size differs. Each case runs the
project's reader kernel (``catalog.reader``) on local files, best of ``REPEATS``, the two sizes
interleaved in the same run:

* points, dense: 1,000 random points over the 4 tiles (``read_points``, files opened fresh);
* points, sparse: 25 points per tile (the 40-tile case of ``bench_points``, per tile);
* windows: 20 random 256 x 256 windows (``read_window``), and whole tiles;
* zonal: ``polygon_sums`` over a ~1 km² polygon per tile and over most of each tile;
* map tiles: rio-tiler (GDAL) rendering 4 web-mercator tiles at zoom 14 per item, 3 bands;
* size: bytes of the embeddings + scales COGs (overviews included), and the bytes a one-pixel
  read fetches remotely (one codes block + one scales block, the mean compressed size).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._support import md_table, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: block sizes compared (px); the first is the published one, the others are compared with it
SIZES = tuple(
    int(v) for v in os.environ.get("TESSERA_STAC_BENCH_BLOCKSIZES", "64,16,32,128").split(",")
)
REPEATS = 3
YEAR = 2024


def variants(published: Path, work: Path) -> dict[int, list[dict[str, Any]]]:
    """Per block size, the 4 items with hrefs to re-encoded copies of their COGs."""
    import rasterio
    import rasterio.shutil

    from tessera_stac.catalog.profile import EMBEDDINGS, SCALES

    out: dict[int, list[dict[str, Any]]] = {}
    for size in SIZES:
        items = []
        for path in sorted(published.glob(f"*/{YEAR}/*/*.json")):
            item = json.loads(path.read_text())
            for key, profile in ((EMBEDDINGS.asset_key, EMBEDDINGS), (SCALES.asset_key, SCALES)):
                src = (path.parent / item["assets"][key]["href"]).resolve()
                dst = work / str(size) / path.parent.name / src.name
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    predictor = {1: "NO", 2: "STANDARD", 3: "FLOATING_POINT"}[profile.predictor]
                    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
                        rasterio.shutil.copy(
                            str(src),
                            str(dst),
                            driver="COG",
                            BLOCKSIZE=size,
                            COMPRESS=profile.compress,
                            LEVEL=profile.level or 1,
                            PREDICTOR=predictor,
                            OVERVIEWS="FORCE_USE_EXISTING",
                            NUM_THREADS="ALL_CPUS",
                        )
                item["assets"][key]["href"] = str(dst)
            item["links"] = []
            items.append(item)
        out[size] = items
    return out


def best(fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def in_cell(item: dict[str, Any], n: int, rng: random.Random) -> list[tuple[float, float]]:
    from tessera_stac.catalog.model import GridCell

    west, south, east, north = GridCell.parse(item["id"].rsplit("_", 1)[0]).bounds
    return [
        (rng.uniform(west + 1e-6, east - 1e-6), rng.uniform(south + 1e-6, north - 1e-6))
        for _ in range(n)
    ]


def points(items: list[dict[str, Any]], per_item: list[list[tuple[float, float]]]) -> None:
    from tessera_stac.catalog.reader import ItemRecipe, open_raster, rasterio_env, read_points

    with rasterio_env():
        for item, pts in zip(items, per_item, strict=True):
            rec = ItemRecipe.of(item)
            with open_raster(rec.codes_href) as cds, open_raster(str(rec.scale_href)) as sds:
                read_points(cds, sds, rec.quantization, *zip(*pts, strict=True))


def windows(items: list[dict[str, Any]], boxes: list[tuple[int, int]], side: int) -> None:
    from tessera_stac.catalog.reader import ItemRecipe, open_raster, rasterio_env, read_window

    with rasterio_env():
        for item in items:
            rec = ItemRecipe.of(item)
            with open_raster(rec.codes_href) as cds:
                for r, c in boxes:
                    read_window(cds, r, min(r + side, cds.height), c, min(c + side, cds.width))


def zonal(items: list[dict[str, Any]], shrink: float) -> None:
    from tessera_stac.catalog.model import GridCell
    from tessera_stac.catalog.reader import (
        ItemRecipe,
        iter_polygon_pixels,
        open_raster,
        polygon_sums,
        rasterio_env,
    )

    with rasterio_env():
        for item in items:
            rec = ItemRecipe.of(item)
            cell = GridCell.parse(item["id"].rsplit("_", 1)[0])
            w, s, e, n = cell.bounds
            cx, cy, hx, hy = (w + e) / 2, (s + n) / 2, (e - w) / 2 * shrink, (n - s) / 2 * shrink
            ring = [[cx - hx, cy - hy], [cx + hx, cy - hy], [cx + hx, cy + hy], [cx - hx, cy - hy]]
            geometry = {"type": "Polygon", "coordinates": [ring]}
            with open_raster(rec.codes_href) as cds, open_raster(str(rec.scale_href)) as sds:
                polygon_sums(
                    iter_polygon_pixels(cds, sds, rec.quantization, geometry, cell),
                    rec.quantization,
                )


def map_tiles(items: list[dict[str, Any]]) -> None:
    """What a map client triggers: rio-tiler (GDAL) rendering 256 px web-mercator tiles of 3
    bands at zoom 14 (~native resolution) over each item, 4 tiles per item."""
    import morecantile
    from rio_tiler.io import Reader

    from tessera_stac.catalog.reader import rasterio_env

    tms = morecantile.tms.get("WebMercatorQuad")
    with rasterio_env():
        for item in items:
            w, s, e, n = item["bbox"]
            centre = tms.tile((w + e) / 2, (s + n) / 2, 14)
            with Reader(item["assets"]["embeddings"]["href"]) as src:
                for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                    src.tile(centre.x + dx, centre.y + dy, 14, indexes=(1, 2, 3))


def sizes(items: list[dict[str, Any]]) -> dict[str, float]:
    from tessera_stac.catalog.reader import TiffBlocks

    total = 0
    block_bytes = []
    for item in items:
        for key in ("embeddings", "scales"):
            href = item["assets"][key]["href"]
            total += os.path.getsize(href)
            blocks = TiffBlocks(href)
            block_bytes.append(float(np.mean(blocks.block_bytes)))
            blocks.close()
    return {
        "files_mb": round(total / 1e6, 1),
        "one_pixel_remote_kb": round(sum(block_bytes) / len(items) / 1e3, 1),
    }


def main() -> None:
    from bench.bench_join import CACHE, published_tiles

    published = published_tiles()
    sets = variants(published, CACHE / "blocksize")
    rng = random.Random(7)
    dense = [in_cell(i, 250, rng) for i in sets[SIZES[0]]]
    sparse = [in_cell(i, 25, rng) for i in sets[SIZES[0]]]
    boxes = [(rng.randrange(0, 1000), rng.randrange(0, 900)) for _ in range(20)]
    load_before = os.getloadavg()
    rows: dict[int, dict[str, Any]] = {s: sizes(items) for s, items in sets.items()}
    cases: list[tuple[str, Callable[[list[dict[str, Any]]], None]]] = [
        ("points_dense_s", lambda it: points(it, dense)),
        ("points_sparse_s", lambda it: points(it, sparse)),
        ("windows_256_s", lambda it: windows(it, boxes, 256)),
        ("whole_tiles_s", lambda it: windows(it, [(0, 0)], 100_000)),
        ("zonal_small_s", lambda it: zonal(it, 0.1)),
        ("zonal_large_s", lambda it: zonal(it, 0.9)),
        ("map_tiles_s", map_tiles),
    ]
    for name, fn in cases:
        for size, items in sets.items():  # the sizes interleaved, case by case
            rows[size][name] = round(best(lambda fn=fn, items=items: fn(items)), 3)
    results = {
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "sizes": {str(k): v for k, v in rows.items()},
    }
    write_results("blocksize", results, markdown(results))


def markdown(r: dict[str, Any]) -> str:
    keys = [
        ("points_dense_s", "1,000 points over 4 tiles, s"),
        ("points_sparse_s", "25 points in each of 4 tiles, s"),
        ("windows_256_s", "20 windows of 256 x 256 px per tile, s"),
        ("whole_tiles_s", "4 whole tiles, s"),
        ("zonal_small_s", "zonal sums, ~1 km² per tile, s"),
        ("zonal_large_s", "zonal sums, 80 % of each tile, s"),
        ("map_tiles_s", "16 map tiles (rio-tiler, 3 bands, z14), s"),
        ("files_mb", "embeddings + scales COGs of 4 tiles, MB"),
        ("one_pixel_remote_kb", "bytes one remote pixel read fetches, kB"),
    ]
    sizes = list(r["sizes"])
    lines = [
        "# COG block size: " + ", ".join(f"{s} px" for s in sizes) + " (bench/bench_blocksize.py)",
        "",
        f"Same 4 real-size tiles re-encoded at each size (same codec, predictor, level and "
        f"overviews); reader kernel on local files, best of {REPEATS}, sizes interleaved. "
        f"{r['cpus']} cores, shared; load average before {r['load_average_before']}, after "
        f"{r['load_average_after']}.",
        "",
    ]
    rows = []
    for key, label in keys:
        vals = [r["sizes"][s][key] for s in sizes]
        rows.append([label, *vals, *(round(v / vals[0], 2) if vals[0] else "-" for v in vals[1:])])
    lines += md_table(
        ["measure", *(f"{s} px" for s in sizes), *(f"{s} / {sizes[0]}" for s in sizes[1:])],
        rows,
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Map tiles through the reader kernel: our API against a direct kernel path and bare rio-tiler,
z12-z15, same files, same tiles, same run (issue 21).

Four tiles around 72°E / 21.8°N (two UTM zones; 1024 px windows of their real grids at the
shared corner, 128-band int8 + scales in the published profile with overviews 2/4/8) are loaded
into a throwaway pgSTAC whose Collection holds its fitted PCA projection. Two API servers run
(uvicorn subprocesses, one worker each, tile cache off): the default (kernel path) and one
with ``TESSERA_STAC_API_TILE_KERNEL=false`` (GDAL's warped reads, the old path).

Scenarios, each a 256 px PNG web-mercator tile, sequential requests, z12-z15:

* ``item``: one item in PCA colours (129 bands read);
* ``mosaic``: the year's mosaic at the corner, PCA colours;
* ``similarity``: the same mosaic tiles coloured by cosine similarity to a point.

Paths timed per tile, rounds alternating their order so drift on the shared machine hits all:

* ``api``: the API (kernel path), over HTTP;
* ``api_gdal``: the API with the kernel off, over HTTP;
* ``direct``: no HTTP, no titiler: the plan of each item's pixels
  (:func:`~tessera_stac.catalog.reader.warp.plan_warp`), the touched blocks of the codes and
  scales read through the kernel, resampled by index, dequantised, masked to each item's own
  0.1° cell (mosaics), projected / cosine, PNG encoded (dataset handles kept open, and the
  tile matrix set and an LRU of warp plans of the API's size, as the API keeps them);
* ``direct_rows``: the same, the tile's codes and scales merged first, then dequantised and
  projected 32 rows at a time as the API's algorithms do (``api.tiles.dequantised_rows``):
  API / direct rows is the API's own overhead;
* ``bare``: rio-tiler's ``Reader.tile`` per asset (GDAL), ``mosaic_reader``, the same
  algorithm, PNG.

Pixels: every timed tile is also fetched as ``.npy`` from both servers and compared (pixels
whose mask or value differs are counted). Target: API p50 <= 1.5x the direct path.
Results: ``bench/results/kernel_tiles.json`` and ``kernel_tiles.md``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench._support import (
    COLLECTION,
    md_table,
    percentile,
    temp_cluster,
    uvicorn_server,
    write_results,
)
from bench.bench_tiles import CORNER, YEAR, bare_mosaic, load_tiles

HERE = Path(__file__).resolve().parent
ZOOMS = (12, 13, 14, 15)
ROUNDS = int(os.environ.get("TESSERA_STAC_BENCH_TILE_ROUNDS", "4"))
PER_ZOOM = 3
WINDOW = 1024
QUERY = (72.0321, 21.8123)
PATHS = ("api", "api_gdal", "direct", "direct_rows", "bare")
TARGET = 1.5


def tiles_near(lon: float, lat: float, zoom: int, n: int) -> list[Any]:
    """``n`` tiles of ``zoom`` spiralling out from the one holding (lon, lat)."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    centre = tms.tile(lon, lat, zoom)
    out: list[Any] = []
    ring = 0
    while len(out) < n:
        for dx in range(-ring, ring + 1):
            for dy in range(-ring, ring + 1):
                if max(abs(dx), abs(dy)) == ring and len(out) < n:
                    out.append(morecantile.Tile(centre.x + dx, centre.y + dy, zoom))
        ring += 1
    return out


def on_cog(path: str, tiles: list[Any], n: int = PER_ZOOM) -> list[Any]:
    """The first ``n`` of ``tiles`` that lie on the COG at ``path``."""
    from rio_tiler.io import Reader

    with Reader(path) as src:
        return [t for t in tiles if src.tile_exists(t.x, t.y, t.z)][:n]


# --------------------------------------------------------------------------- direct path
class Direct:
    """Tiles of items read through the kernel without titiler: plan, blocks, index, PNG."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        import morecantile
        import rasterio

        from tessera_stac.api.caches import LruCache
        from tessera_stac.api.settings import ApiSettings

        self.items = items
        self.open = {
            (i["id"], key): rasterio.open(i["assets"][key]["href"])
            for i in items
            for key in ("embeddings", "scales")
        }
        # what the API keeps per worker, kept here too, so the ratio is the API's own cost:
        # the tile matrix set built once, and warp plans in an LRU of the API's default size
        # (the API's key is every input of the plan; an item and a tile fix them all here)
        self.tms = morecantile.tms.get("WebMercatorQuad")
        self.plans = LruCache(ApiSettings().tile_plan_cache_size)
        # ... and the kernel's decoded blocks, with the API's default budget (the servers
        # below keep them too: a tile asked again reads kept blocks on both paths)
        from tessera_stac.catalog.reader import set_block_cache

        set_block_cache(ApiSettings().block_cache_mb * 2**20)

    def close(self) -> None:
        for ds in self.open.values():
            ds.close()

    def item_parts(self, item: dict[str, Any], tile: Any) -> Any:
        """(codes (h, w, 128) int8, scales (h, w), inside (h, w)) of one item on ``tile``
        (None when the tile misses it)."""
        from rio_tiler.utils import get_vrt_transform

        from tessera_stac.catalog.reader.tiff import blocks_of
        from tessera_stac.catalog.reader.warp import plan_warp, read_planned

        tms = self.tms
        codes_ds = self.open[(item["id"], "embeddings")]
        scales_ds = self.open[(item["id"], "scales")]
        plan = self.plans.get((item["id"], tile))
        if plan is None:
            bounds = tuple(tms.xy_bounds(tile))
            transform, vw, vh = get_vrt_transform(
                codes_ds, bounds, 256, 256, dst_crs=tms.rasterio_crs
            )
            blocks = blocks_of(codes_ds)
            assert blocks is not None
            plan = plan_warp(
                codes_ds.crs, tuple(codes_ds.transform)[:6], blocks.levels, tms.rasterio_crs,
                tuple(transform)[:6], (vw, vh), (256, 256),
            )  # fmt: skip
            assert plan is not None, "an ambiguous overview choice in the bench"
            self.plans.put((item["id"], tile), plan)
        if not plan.inside.any():
            return None
        codes_blocks = blocks_of(codes_ds, plan.level)
        scale_blocks = blocks_of(scales_ds, plan.level)
        assert codes_blocks is not None and scale_blocks is not None
        codes = read_planned(codes_blocks, plan, -128)
        scales = read_planned(scale_blocks, plan, float("nan"))[..., 0]
        return codes, scales, plan.inside

    def item_values(self, item: dict[str, Any], tile: Any) -> Any:
        """(values (h, w, 128) float32, valid (h, w)) of one item on ``tile`` (None when the
        tile misses it)."""
        from tessera_stac.catalog.reader import dequantize
        from tessera_stac.catalog.stac import embeddings_quantization

        got = self.item_parts(item, tile)
        if got is None:
            return None
        codes, scales, inside = got
        values, valid = dequantize(codes, embeddings_quantization(), scales)
        return values, valid & inside

    def values(self, items: list[dict[str, Any]], tile: Any, cells: bool) -> Any:
        """The tile's values and validity over ``items`` (each only in its own 0.1° cell when
        ``cells``: the mosaic rule)."""
        owner = self.owners(tile) if cells else None
        out: np.ndarray | None = None
        valid = np.zeros((256, 256), dtype=bool)
        for item in items:
            got = self.item_values(item, tile)
            if got is None:
                continue
            values, ok = got
            if owner is not None:
                ok &= owner == self.cell_key(item)
            if out is None:
                out = values
            else:
                out[ok] = values[ok]
            valid |= ok
        assert out is not None
        return out, valid

    def parts(self, items: list[dict[str, Any]], tile: Any, cells: bool) -> Any:
        """(codes (h, w, 128), scales (h, w), inside (h, w)) of the tile over ``items``,
        merged by :meth:`values`' rule before dequantising."""
        owner = self.owners(tile) if cells else None
        codes = scales = None
        inside = np.zeros((256, 256), dtype=bool)
        for item in items:
            got = self.item_parts(item, tile)
            if got is None:
                continue
            c, s, ok = got
            if owner is not None:
                ok = ok & (owner == self.cell_key(item))
            if codes is None:
                codes, scales = c, s
            else:
                codes[ok], scales[ok] = c[ok], s[ok]
            inside |= ok
        assert codes is not None and scales is not None
        return codes, scales, inside

    @staticmethod
    def cell_key(item: dict[str, Any]) -> int:
        west, south = item["bbox"][0], item["bbox"][1]
        return round(west * 10) * 10_000 + round(south * 10)

    @staticmethod
    def owners(tile: Any) -> np.ndarray:
        """Key of the 0.1° cell holding each output pixel centre."""
        import morecantile
        from pyproj import Transformer

        b = morecantile.tms.get("WebMercatorQuad").xy_bounds(tile)
        xs = b.left + (np.arange(256) + 0.5) * (b.right - b.left) / 256
        ys = b.top - (np.arange(256) + 0.5) * (b.top - b.bottom) / 256
        lon, lat = Transformer.from_crs(3857, 4326, always_xy=True).transform(*np.meshgrid(xs, ys))
        return np.floor(np.asarray(lon) * 10).astype(int) * 10_000 + np.floor(
            np.asarray(lat) * 10
        ).astype(int)


def direct_render(
    direct: Direct,
    items: list[dict[str, Any]],
    cells: bool,
    projection: dict[str, Any] | None,
    vector: list[float] | None,
    by_rows: bool = False,
) -> Callable[[Any], bytes]:
    """PNG of a tile: PCA colours (``projection``) or cosine similarity to ``vector`` of the
    dequantised values of ``items`` (each in its own cell when ``cells``). ``by_rows``: as
    the API's algorithms do (``api.tiles.dequantised_rows``), the codes and scales of the
    items merged first (the same mosaic rule), then dequantised and projected 32 rows at a
    time; else the whole tile's values at once (the issue's reference)."""
    from rio_tiler.colormap import cmap
    from rio_tiler.utils import linear_rescale, render

    from tessera_stac.api.tiles import ROWS_AT_ONCE
    from tessera_stac.catalog.projection import apply_projection
    from tessera_stac.catalog.reader import dequantize
    from tessera_stac.catalog.stac import embeddings_quantization

    viridis = cmap.get("viridis")
    q = embeddings_quantization()
    query = np.asarray(vector, dtype=np.float32) if vector is not None else None

    def bands(tile: Any) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """(rows, values, valid) of the tile, 32 rows at a time or whole."""
        if not by_rows:
            values, valid = direct.values(items, tile, cells)
            yield slice(0, 256), values, valid
            return
        codes, scales, inside = direct.parts(items, tile, cells)
        for r in range(0, 256, ROWS_AT_ONCE):
            band = slice(r, r + ROWS_AT_ONCE)
            values, ok = dequantize(codes[band], q, scales[band])
            yield band, values, ok & inside[band]

    def run(tile: Any) -> bytes:
        rgb = np.empty((3, 256, 256), dtype=np.uint8)
        cos = np.empty((256, 256), dtype=np.float32)
        valid = np.empty((256, 256), dtype=bool)
        for rows, values, ok in bands(tile):
            valid[rows] = ok
            if projection is not None:
                rgb[:, rows] = np.moveaxis(apply_projection(values, projection), -1, 0)
                continue
            assert query is not None
            norms = np.linalg.norm(values, axis=-1) * np.float32(np.linalg.norm(query))
            with np.errstate(invalid="ignore", divide="ignore"):
                cos[rows] = np.where(ok, (values @ query) / norms, 0)
        mask = np.where(valid, 255, 0).astype(np.uint8)
        if projection is not None:
            return bytes(render(rgb, mask, img_format="PNG"))
        scaled = linear_rescale(cos, in_range=(0, 1)).astype(np.uint8)
        return bytes(render(scaled[None], mask, img_format="PNG", colormap=viridis))

    return run


# --------------------------------------------------------------------------------- run
def summarise(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def npy_pixels(content: bytes) -> tuple[np.ndarray, np.ndarray]:
    arr = np.load(io.BytesIO(content))
    return arr[:-1], arr[-1] > 0


def differing(a: bytes, b: bytes) -> tuple[int, int]:
    """(pixels whose mask or values differ, pixels) of two ``.npy`` tiles."""
    (da, va), (db, vb) = npy_pixels(a), npy_pixels(b)
    both = va & vb
    values = np.zeros(va.shape, dtype=bool)
    values[both] = np.any(da[:, both] != db[:, both], axis=0)
    return int(((va != vb) | values).sum()), int(va.size)


def main() -> None:
    import httpx

    from tessera_stac.api.tiles import EmbeddingProjection, EmbeddingSimilarity, tile_urls

    load_before = [round(v, 2) for v in os.getloadavg()]
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        root = Path(tmpdir)
        dsn = cluster.dsn()
        items, projection = load_tiles(root, dsn, WINDOW)
        env = {"TESSERA_STAC_DATABASE_URL": dsn, "TESSERA_STAC_API_TILE_CACHE_MB": "0"}
        factory = "tessera_stac.api.app:create_app_from_env"
        direct = Direct(items)
        with (
            uvicorn_server(factory, env) as url,
            uvicorn_server(factory, {**env, "TESSERA_STAC_API_TILE_KERNEL": "false"}) as gdal_url,
        ):
            client = httpx.Client(timeout=300)
            vector = client.get(
                f"{url}/embeddings/position",
                params={"lon": QUERY[0], "lat": QUERY[1], "year": YEAR},
            ).json()["embedding"]
            item = items[1]
            item_lon = (item["bbox"][0] + item["bbox"][2]) / 2
            item_lat = (item["bbox"][1] + item["bbox"][3]) / 2
            pca = EmbeddingProjection(projection=projection)
            similar = EmbeddingSimilarity(vector=vector)
            scenarios = {
                "item": (
                    tile_urls(url, COLLECTION, "pca", item_id=item["id"]),
                    lambda z: on_cog(
                        item["assets"]["embeddings"]["href"],
                        tiles_near((item_lon + 72.0) / 2, (item_lat + 21.8) / 2, z, 25),
                    ),
                    direct_render(direct, [item], False, projection, None),
                    direct_render(direct, [item], False, projection, None, by_rows=True),
                    bare_mosaic([item], pca),
                ),
                "mosaic": (
                    tile_urls(url, COLLECTION, "pca", year=YEAR),
                    lambda z: tiles_near(*CORNER, z, PER_ZOOM),
                    direct_render(direct, items, True, projection, None),
                    direct_render(direct, items, True, projection, None, by_rows=True),
                    bare_mosaic(items, pca),
                ),
                "similarity": (
                    tile_urls(url, COLLECTION, "similarity", year=YEAR, lon=QUERY[0], lat=QUERY[1]),
                    lambda z: tiles_near(*CORNER, z, PER_ZOOM),
                    direct_render(direct, items, True, None, vector),
                    direct_render(direct, items, True, None, vector, by_rows=True),
                    bare_mosaic(items, similar, similarity=True),
                ),
            }
            results: dict[str, Any] = {}
            for name, (urls, tiles_of, direct_fn, rows_fn, bare_fn) in scenarios.items():
                template = urls["xyz"]
                for z in ZOOMS:
                    tiles = tiles_of(z)

                    def api(tile: Any, base: str = url, template: str = template) -> bytes:
                        got = client.get(
                            template.replace(url, base)
                            .replace("{z}", str(tile.z))
                            .replace("{x}", str(tile.x))
                            .replace("{y}", str(tile.y))
                        )
                        got.raise_for_status()
                        return got.content

                    def api_gdal(tile: Any, api: Callable[..., bytes] = api) -> bytes:
                        return api(tile, base=gdal_url)

                    run = {
                        "api": api,
                        "api_gdal": api_gdal,
                        "direct": direct_fn,
                        "direct_rows": rows_fn,
                        "bare": bare_fn,
                    }
                    for fn in run.values():
                        fn(tiles[0])  # warm: search registered, files opened once
                    timings: dict[str, list[float]] = {p: [] for p in PATHS}
                    for round_ in range(ROUNDS):
                        order = PATHS if round_ % 2 == 0 else tuple(reversed(PATHS))
                        for who in order:
                            for tile in tiles:
                                start = time.perf_counter()
                                run[who](tile)
                                timings[who].append(time.perf_counter() - start)
                    diff = total = 0
                    for tile in tiles:
                        npy = template.replace(".png", ".npy")
                        path = npy.replace("{z}", str(z)).replace("{x}", str(tile.x))
                        path = path.replace("{y}", str(tile.y))
                        a = client.get(path)
                        b = client.get(path.replace(url, gdal_url))
                        a.raise_for_status()
                        b.raise_for_status()
                        d, n = differing(a.content, b.content)
                        diff, total = diff + d, total + n
                    stats: dict[str, Any] = {p: summarise(timings[p]) for p in PATHS}
                    p50 = {p: stats[p]["p50_ms"] for p in PATHS}
                    stats["api_over_direct"] = round(p50["api"] / p50["direct"], 2)
                    stats["api_over_direct_rows"] = round(p50["api"] / p50["direct_rows"], 2)
                    stats["api_gdal_over_direct"] = round(p50["api_gdal"] / p50["direct"], 2)
                    stats["api_over_bare"] = round(p50["api"] / p50["bare"], 2)
                    stats["speed_up"] = round(p50["api_gdal"] / p50["api"], 2)
                    stats["pixels_differing"] = diff
                    stats["pixels_compared"] = total
                    stats["load"] = [round(v, 2) for v in os.getloadavg()]
                    results[f"{name} z{z}"] = stats
                    print(name, z, json.dumps(stats), flush=True)
            client.close()
        direct.close()
    report = {
        "zooms": list(ZOOMS),
        "tile_px": 256,
        "rounds": ROUNDS,
        "tiles_per_zoom": PER_ZOOM,
        "cogs": f"4 tiles ({WINDOW} px windows of the real grids at the corner), 128-band int8 "
        "ZSTD (published profile, overviews 2/4/8) + scales",
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "scenarios": results,
        "target": f"API p50 <= {TARGET}x the direct kernel path",
    }
    write_results("kernel_tiles", report, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Map tiles through the reader kernel: API vs direct kernel path vs bare rio-tiler",
        "",
        f"256 px PNG tiles, sequential; {report['rounds']} alternating rounds x "
        f"{report['tiles_per_zoom']} tiles per zoom. {report['cogs']}. `api`: our API (kernel "
        "path, the default); `api_gdal`: the same API with `TESSERA_STAC_API_TILE_KERNEL=false` "
        "(GDAL's warped reads, the old path); `direct`: plan + kernel blocks + index resampling + "
        "dequantise + PCA/cosine + PNG, no HTTP, the whole tile's values at once (the issue's "
        "reference); `direct rows`: the same, dequantised and projected 32 rows at a time as "
        "the API's algorithms do (API / direct rows: the API's own overhead); `bare`: "
        "rio-tiler `Reader.tile` per asset + `mosaic_reader` + the same algorithm + PNG. "
        "Pixels: each tile's `.npy` from both APIs, "
        "pixels whose mask or values differ. Load average before/after: "
        f"{report['load_average_before']} / {report['load_average_after']} on "
        f"{report['cpus']} CPUs (shared machine).",
        "",
        *md_table(
            ("scenario", "API p50 ms", "API (GDAL) p50 ms", "direct p50 ms",
             "direct rows p50 ms", "bare p50 ms", "API / direct", "API / direct rows",
             "API (GDAL) / direct", "API / bare", "kernel speed-up", "pixels differing",
             "load (1 min)"),
            [
                (name, s["api"]["p50_ms"], s["api_gdal"]["p50_ms"], s["direct"]["p50_ms"],
                 s["direct_rows"]["p50_ms"], s["bare"]["p50_ms"], s["api_over_direct"],
                 s["api_over_direct_rows"], s["api_gdal_over_direct"], s["api_over_bare"],
                 f"{s['speed_up']}x", f"{s['pixels_differing']} / {s['pixels_compared']}",
                 s["load"][0])
                for name, s in report["scenarios"].items()
            ],
        ),
    ]  # fmt: skip
    lines += ["", f"Target: {report['target']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

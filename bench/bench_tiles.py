"""Map tile latency of our API (titiler-pgstac in the API process) against bare rio-tiler.

Four tiles around 72°E / 21.8°N (two UTM zones), each the 768 x 768 px of its real grid
nearest the shared corner (128 int8 bands, the published COG profile with overviews), are
loaded into a throwaway pgSTAC with a Collection holding its fitted PCA projection; the API
runs as a uvicorn subprocess (one worker).
Scenarios, each a web-mercator tile at zoom 14, 256 px PNG, sequential requests:

* ``single``: one item, dimensions 1-3 as RGB (``assets=embeddings|bidx=1,2,3``);
* ``mosaic``: the year's mosaic at the corner where the 4 tiles meet, PCA colours;
* ``similarity``: the same mosaic tile coloured by cosine similarity to a point.

Reference, same run, same files, same tiles: bare rio-tiler in this process (``Reader`` opened
per request as titiler does, ``tile()``, rescale, PNG encode); for the mosaic and similarity,
rio-tiler's ``mosaic_reader`` over the 4 COGs and numpy for the projection / cosine. Rounds
alternate (bare, API, API, bare, ...) so drift on the shared machine hits both. Target: single
item API p50 <= 1.5x bare rio-tiler.

Results: ``bench/results/tiles.json`` and ``tiles.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._support import (
    COLLECTION,
    md_table,
    percentile,
    temp_cluster,
    uvicorn_server,
    write_ndjson,
)

HERE = Path(__file__).resolve().parent
YEAR = 2024
CELLS = [(71.95, 21.75), (72.05, 21.75), (71.95, 21.85), (72.05, 21.85)]
ZOOM = 14
ROUNDS = 2
PER_ROUND = 6
CORNER = (72.0, 21.8)
WINDOW = 768  # px of each tile written (the part near CORNER): keeps set-up short


def write_tile(root: Path, lon: float, lat: float, window: int = WINDOW) -> dict[str, Any]:
    """One (tile, year) in the published layout and profile (with overviews); its item
    (``window`` x ``window`` px of the tile's real grid nearest :data:`CORNER`)."""
    import rasterio
    from affine import Affine
    from pyproj import Transformer
    from rasterio.enums import Resampling

    from tessera_stac.catalog.model import AssetRecord, GridCell
    from tessera_stac.catalog.profile import EMBEDDINGS, SCALES
    from tessera_stac.publisher.embeddings.georef import rebuild_georef

    cell = GridCell.containing(lon, lat)
    georef = rebuild_georef(cell)
    # the WINDOW x WINDOW pixels of the tile's real grid nearest the corner the 4 tiles share
    # (the tiles are 0.1° cells: every benchmarked web-mercator tile lies in these windows)
    a, _, c, _, e, f = georef.transform
    cx, cy = Transformer.from_crs(4326, georef.epsg, always_xy=True).transform(*CORNER)
    col = int(min(max(round((cx - c) / a) - window // 2, 0), georef.shape[1] - window))
    row = int(min(max(round((cy - f) / e) - window // 2, 0), georef.shape[0] - window))
    transform = (a, 0.0, c + col * a, 0.0, e, f + row * e)
    h = w = window
    rng = np.random.default_rng(int(lon * 100 + lat))
    # patches of 32 px plus noise (compresses like real embeddings, not like white noise)
    low = rng.integers(-100, 101, size=(EMBEDDINGS.count, h // 32 + 1, w // 32 + 1), dtype=np.int8)
    codes = np.repeat(np.repeat(low, 32, axis=1), 32, axis=2)[:, :h, :w]
    codes = codes + rng.integers(-6, 7, size=codes.shape, dtype=np.int8)
    scales = rng.uniform(0.03, 0.1, size=(h, w)).astype(np.float32)
    folder = root / COLLECTION / str(YEAR) / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    for profile, data in ((EMBEDDINGS, codes), (SCALES, scales[None])):
        opts = {k.lower(): v for k, v in profile.creation_options().items()}
        with rasterio.open(
            folder / profile.filename,
            "w",
            driver="GTiff",
            height=h,
            width=w,
            count=profile.count,
            dtype=profile.dtype,
            nodata=profile.nodata,
            crs=f"EPSG:{georef.epsg}",
            transform=Affine(*transform),
            **opts,
        ) as dst:
            dst.write(data)
            dst.build_overviews(list(profile.overview_levels), Resampling.nearest)
    assets = {
        p.asset_key: AssetRecord(
            p.asset_key,
            str(folder / p.filename),
            p.media_type,
            (folder / p.filename).stat().st_size,
            "1220" + "0" * 64,
            p.roles,
        )
        for p in (EMBEDDINGS, SCALES)
    }
    from tessera_stac.catalog.model import PixelCounts
    from tessera_stac.publisher.samples.items import fake_item

    return fake_item(
        cell.lon,
        cell.lat,
        YEAR,
        collection_id=COLLECTION,
        grid=(georef.epsg, transform, (h, w)),
        assets=assets,
        counts=PixelCounts(valid=h * w, invalid=0),
    )


def load_tiles(
    root: Path, dsn: str, window: int = WINDOW
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The benchmarks' tiles written under ``root`` (``window`` px corner windows of
    :data:`CELLS`) and their collection with its PCA basis, loaded into ``dsn``: (item dicts,
    basis)."""
    import pystac

    from tessera_stac.catalog.constants import PROJECTION_FIELD
    from tessera_stac.catalog.pgstac.load import load
    from tessera_stac.catalog.projection import fit_collection_projection
    from tessera_stac.catalog.stac import create_collection

    items = [write_tile(root, lon, lat, window) for lon, lat in CELLS]
    coll = create_collection(
        [pystac.Item.from_dict(i) for i in items], "v1", COLLECTION, link_items=False
    ).to_dict(include_self_link=False, transform_hrefs=False)
    projection = fit_collection_projection([(i, "") for i in items])
    coll[PROJECTION_FIELD] = projection
    load(dsn, str(write_ndjson(root / "items.ndjson", [coll, *items])))
    return items, projection


def tiles_around(lon: float, lat: float, n: int) -> list[Any]:
    """``n`` zoom-14 tiles spiralling out from the one holding (lon, lat)."""
    import morecantile

    centre = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, ZOOM)
    out = []
    ring = 0
    while len(out) < n:
        for dx in range(-ring, ring + 1):
            for dy in range(-ring, ring + 1):
                if max(abs(dx), abs(dy)) == ring and len(out) < n:
                    out.append(morecantile.Tile(centre.x + dx, centre.y + dy, ZOOM))
        ring += 1
    return out


def inside(path: str, lon: float, lat: float) -> list[Any]:
    """``PER_ROUND`` tiles around (lon, lat) that lie on the COG at ``path``."""
    from rio_tiler.io import Reader

    with Reader(path) as src:
        found = [t for t in tiles_around(lon, lat, 25) if src.tile_exists(t.x, t.y, t.z)]
    return found[:PER_ROUND]


# --------------------------------------------------------------------------- bare rio-tiler
def bare_single(path: str) -> Callable[[Any], bytes]:
    from rio_tiler.io import Reader

    def render(tile: Any) -> bytes:
        with Reader(path) as src:
            img = src.tile(tile.x, tile.y, tile.z, indexes=(1, 2, 3), resampling_method="nearest")
        img.rescale(in_range=((-127, 127),))
        return bytes(img.render(img_format="PNG"))

    return render


def bare_mosaic(
    items: list[dict[str, Any]], algorithm: Callable[[Any], Any], similarity: bool = False
) -> Callable[..., bytes]:
    """rio-tiler's mosaic_reader over the items' two assets (129 bands), then ``algorithm``
    and the API's rendering (similarity: rescale 0..1 and viridis)."""
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader
    from rio_tiler.models import ImageData
    from rio_tiler.mosaic import mosaic_reader

    def read(item: dict[str, Any], x: int, y: int, z: int) -> ImageData:
        parts = []
        for key in ("embeddings", "scales"):
            with Reader(item["assets"][key]["href"]) as src:
                parts.append(src.tile(x, y, z, resampling_method="nearest"))
        return ImageData.create_from_list(parts)

    def render(tile: Any) -> bytes:
        img, _ = mosaic_reader(items, read, tile.x, tile.y, tile.z)
        out = algorithm(img)
        if similarity:
            out.rescale(in_range=((0, 1),))
            return bytes(out.render(img_format="PNG", colormap=cmap.get("viridis")))
        return bytes(out.render(img_format="PNG"))

    return render


def drive(fetch: Callable[[Any], Any], tiles: list[Any]) -> list[float]:
    times = []
    for tile in tiles:
        start = time.perf_counter()
        fetch(tile)
        times.append(time.perf_counter() - start)
    return times


def summarise(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def main() -> None:
    import httpx

    from tessera_stac.api.tiles import EmbeddingProjection, EmbeddingSimilarity, tile_urls

    load_before = [round(v, 2) for v in os.getloadavg()]
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        root = Path(tmpdir)
        dsn = cluster.dsn()
        items, projection = load_tiles(root, dsn)
        single_item = items[1]
        corner = CORNER
        query = (72.0321, 21.8123)
        cell_lon, cell_lat = 72.02, 21.78  # inside item 1's window
        scenarios: dict[str, tuple[dict[str, str], list[Any], Callable[[Any], bytes]]] = {}
        with uvicorn_server(
            "tessera_stac.api.app:create_app_from_env", {"TESSERA_STAC_DATABASE_URL": dsn}
        ) as url:
            client = httpx.Client(timeout=120)
            vector = client.get(
                f"{url}/embeddings/position",
                params={"lon": query[0], "lat": query[1], "year": YEAR},
            ).json()["embedding"]
            scenarios["single"] = (
                tile_urls(url, COLLECTION, "rgb", item_id=single_item["id"]),
                inside(single_item["assets"]["embeddings"]["href"], cell_lon, cell_lat),
                bare_single(single_item["assets"]["embeddings"]["href"]),
            )
            scenarios["mosaic"] = (
                tile_urls(url, COLLECTION, "pca", year=YEAR),
                tiles_around(*corner, PER_ROUND),
                bare_mosaic(items, EmbeddingProjection(projection=projection)),
            )
            scenarios["similarity"] = (
                tile_urls(url, COLLECTION, "similarity", year=YEAR, lon=query[0], lat=query[1]),
                tiles_around(*corner, PER_ROUND),
                bare_mosaic(items, EmbeddingSimilarity(vector=vector), similarity=True),
            )
            results: dict[str, Any] = {}
            for name, (urls, tiles, bare) in scenarios.items():
                template = urls["xyz"]

                def api(tile: Any, template: str = template) -> bytes:
                    got = client.get(
                        template.replace("{z}", str(tile.z))
                        .replace("{x}", str(tile.x))
                        .replace("{y}", str(tile.y))
                    )
                    got.raise_for_status()
                    return got.content

                api(tiles[0])  # warm: search registered, files opened once
                bare(tiles[0])
                timings: dict[str, list[float]] = {"api": [], "bare": []}
                for round_ in range(ROUNDS):
                    order = ("bare", "api") if round_ % 2 == 0 else ("api", "bare")
                    for who in order:
                        timings[who] += drive(api if who == "api" else bare, tiles)
                stats = {who: summarise(t) for who, t in timings.items()}
                stats["ratio_p50"] = round(stats["api"]["p50_ms"] / stats["bare"]["p50_ms"], 2)
                stats["ratio_p99"] = round(stats["api"]["p99_ms"] / stats["bare"]["p99_ms"], 2)
                results[name] = stats
            client.close()
    report = {
        "zoom": ZOOM,
        "tile_px": 256,
        "rounds": ROUNDS,
        "requests_per_round": PER_ROUND,
        "cogs": f"4 tiles ({WINDOW} px windows of the real grids at the corner), 128-band int8 "
        "ZSTD (published profile, overviews 2/4/8) + scales",
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "scenarios": results,
        "target": "single item API p50 <= 1.5x bare rio-tiler",
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "tiles.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "tiles.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Map tiles: our API vs bare rio-tiler (same COGs, same tiles, same run)",
        "",
        f"Zoom {report['zoom']} tiles, 256 px PNG, sequential; {report['rounds']} alternating "
        f"rounds x {report['requests_per_round']} tiles. {report['cogs']}. "
        f"Load average before/after: {report['load_average_before']} / "
        f"{report['load_average_after']} on {report['cpus']} CPUs (shared machine).",
        "",
        *md_table(
            ("scenario", "API p50 ms", "API p99 ms", "bare p50 ms", "bare p99 ms", "ratio p50",
             "ratio p99"),
            [
                (name, s["api"]["p50_ms"], s["api"]["p99_ms"], s["bare"]["p50_ms"],
                 s["bare"]["p99_ms"], s["ratio_p50"], s["ratio_p99"])
                for name, s in report["scenarios"].items()
            ],
        ),
    ]  # fmt: skip
    lines += ["", f"Target: {report['target']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

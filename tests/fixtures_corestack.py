"""Reusable pytest fixtures of the corestack area (registered in tests/conftest.py).

* ``bhavnagar_geojson``: the real CoRE Stack MWS layer (116 MWS, straddles 72°E), read-only.
* ``corestack_sample``: the real CoRE Stack static catalog sample folder, read-only.
* ``bhavnagar_frame``: the layer as a GeoDataFrame (session; copy before changing it).
* ``join_tiles``: a catalog root with 4 full-size synthetic tiles (2024, tiled GeoTIFFs with
  the product's overview levels) around 72°E / 21.8°N, written directly in the documented
  layout (used by the API tile tests and the scale area's Dask join test);
  ``write_embedding_tile`` writes one such tile.
* ``bhavnagar_join``: ``(layer, tiles, JoinResult)`` of the Bhavnagar layer joined with the
  publisher's ``published_sample``.
* ``two_years``: two years of two real-size tiles with a change under two MWS (published);
  ``cli_catalog``: the CLI's catalog of it (catalog build, MWS layer, joins of both years,
  per-MWS change), ``(root, mws item id)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corestack"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} (shared reference data beside the checkout) is missing")
    return path


@pytest.fixture(scope="session")
def bhavnagar_geojson() -> Path:
    """Path of the real Bhavnagar MWS layer (GeoServer WFS GeoJSON with a legacy crs)."""
    return _need(SHARED_DATA / "gujarat_bhavnagar_bhavnagar_mws_terrain.geojson")


@pytest.fixture(scope="session")
def corestack_sample() -> Path:
    """Folder of the real CoRE Stack static catalog sample (with its defects)."""
    return _need(SHARED_DATA / "static-catalog-sample")


@pytest.fixture(scope="session")
def bhavnagar_frame(bhavnagar_geojson: Path) -> Any:
    """The Bhavnagar layer read with geopandas (EPSG:4326)."""
    import geopandas as gpd

    return gpd.read_file(bhavnagar_geojson)


# ------------------------------------------------------------------ embedding tiles (COGs)
TEST_EMBEDDING_COLLECTION = "tessera-embeddings-v1"


def write_embedding_tile(
    root: Path,
    lon: float,
    lat: float,
    year: int,
    collection: str = TEST_EMBEDDING_COLLECTION,
    invalid_fraction: float = 0.05,
) -> Path:
    """Write one (tile, year) in the published layout, the way catalog/profile.py documents it.

    The grid is the tile's real one (rebuilt from the cell, DESIGN §1); codes are random int8 in
    [-127, 127], scales in [0.03, 0.1]; ``invalid_fraction`` of the pixels (scattered, plus a
    block) are invalid: code -128 in every band and scale NaN. Returns the item JSON path.
    """
    import zlib

    import numpy as np
    import rasterio
    import rasterio.shutil
    from affine import Affine
    from rasterio.io import MemoryFile

    from tessera_stac.catalog.model import AssetRecord, GridCell, PixelCounts
    from tessera_stac.catalog.profile import EMBEDDINGS, SCALES
    from tessera_stac.catalog.stac import create_item, item_key
    from tessera_stac.publisher.embeddings.georef import rebuild_georef
    from tessera_stac.publisher.samples.items import fake_tile

    cell = GridCell.containing(lon, lat)
    georef = rebuild_georef(cell)
    h, w = georef.shape
    rng = np.random.default_rng(zlib.crc32(f"{cell.name}/{year}".encode()))
    q = rng.integers(-127, 128, size=(EMBEDDINGS.count, h, w), dtype=np.int8)
    s = rng.uniform(0.03, 0.1, size=(h, w)).astype(np.float32)
    bad = rng.random((h, w)) < invalid_fraction
    bad[h // 3 : h // 3 + 60, w // 4 : w // 4 + 200] = True
    q[:, bad] = EMBEDDINGS.nodata
    s[bad] = np.nan
    key = item_key(collection, year, cell.name, f"{cell.name}_{year}")
    folder = root / Path(key).parent
    folder.mkdir(parents=True, exist_ok=True)
    # COGs (GDAL's COG driver) with the product's overview levels, nearest: each overview pixel
    # is a source pixel. Without overviews every decimated read (the collection's PCA fit in
    # ``catalog build``) reads the whole 128-band tile, ~100 s a tile.
    grid = {
        "driver": "MEM",
        "height": h,
        "width": w,
        "crs": f"EPSG:{georef.epsg}",
        "transform": Affine(*georef.transform),
    }
    cog = {
        "driver": "COG",
        "blocksize": 256,
        "compress": "ZSTD",
        "level": 1,
        "interleave": "PIXEL",
        "overviews": "AUTO",
        "overview_resampling": "NEAREST",
    }
    for name, data, nodata in (
        (EMBEDDINGS.filename, q, -128),
        (SCALES.filename, s[None], float("nan")),
    ):
        with (
            MemoryFile() as mem,
            mem.open(count=data.shape[0], dtype=data.dtype, nodata=nodata, **grid) as src,
        ):
            src.write(data)
            rasterio.shutil.copy(src, folder / name, **cog)
    assets = {
        p.asset_key: AssetRecord(
            key=p.asset_key,
            href=f"./{p.filename}",
            media_type=p.media_type,
            size=(folder / p.filename).stat().st_size,
            checksum="1220" + "0" * 64,
            roles=p.roles,
        )
        for p in (EMBEDDINGS, SCALES)
    }
    tile = fake_tile(
        cell,
        year,
        collection_id=collection,
        model_name="tessera",
        grid=(georef.epsg, georef.transform, georef.shape),
        assets=assets,
        counts=PixelCounts(valid=int((~bad).sum()), invalid=int(bad.sum())),
    )
    item = create_item(tile).to_dict(include_self_link=False, transform_hrefs=False)
    path = root / key
    path.write_text(json.dumps(item))
    return path


#: 2 x 2 tiles around 72°E / 21.8°N: two UTM zones, 18 Bhavnagar MWS inside, 15 more partly.
JOIN_TEST_CELLS = [(71.95, 21.75), (72.05, 21.75), (71.95, 21.85), (72.05, 21.85)]
JOIN_TEST_YEAR = 2024


@pytest.fixture(scope="session")
def join_tiles(tmp_path_factory: Any) -> Path:
    """A catalog root with 4 full-size synthetic tiles (2024) straddling 72°E."""
    root = tmp_path_factory.mktemp("join-tiles")
    for lon, lat in JOIN_TEST_CELLS:
        write_embedding_tile(root, lon, lat, JOIN_TEST_YEAR)
    return root


@pytest.fixture(scope="session")
def join_tiles_built(join_tiles: Path, open_tmp: Any) -> Path:
    """``join_tiles`` as a built static catalog (with the collection's projection), in a
    folder the PostgreSQL user can enter; shared read-only by the tile tests."""
    import subprocess

    from tessera_stac.catalog.static import build_static_catalog
    from tessera_stac.catalog.store import open_store

    root = open_tmp("tiles") / "published"
    subprocess.run(["cp", "-al", str(join_tiles), str(root)], check=True)
    report = build_static_catalog(open_store(str(root)), geoparquet=False)
    assert report.ok, report.to_dict()
    return root


# ----------------------------------------------------------------------- the join
@pytest.fixture(scope="session")
def bhavnagar_join(published_sample: Any, bhavnagar_geojson: Path) -> Any:
    """``(layer, tiles, JoinResult)``: the real Bhavnagar layer joined with the publisher's
    ``published_sample`` (two real-size tiles either side of 72°E, 2024)."""
    from tessera_stac.publisher.join.join import cells_covering, find_tiles_local, join_embeddings
    from tessera_stac.publisher.watersheds.layer import read_mws_layer

    layer = read_mws_layer(bhavnagar_geojson)
    year = published_sample.year
    tiles = find_tiles_local(published_sample.dest, year, cells_covering(layer.bbox))
    return layer, tiles, join_embeddings(layer.frame, tiles, year)


# ------------------------------------------------------------------- two years, change
GRIDS = ("grid_71.95_21.85", "grid_72.05_21.85")
YEARS = (2023, 2024)
CHANGE_THRESHOLD = 0.5


@dataclass(frozen=True)
class TwoYears:
    source: Path
    dest: Path
    layer: Any
    changed_uids: tuple[str, ...]
    change_bbox: tuple[float, float, float, float]


@pytest.fixture(scope="session")
def two_years(tmp_path_factory: pytest.TempPathFactory, bhavnagar_geojson: Path) -> TwoYears:
    """Two years (2023, 2024) of two real-size tiles either side of 72°E, published; the land
    under two Bhavnagar MWS of the east cell changes in 2024."""
    import shapely

    from tessera_stac.catalog.model import GridCell
    from tessera_stac.publisher.embeddings import run, tiles
    from tessera_stac.publisher.engines.local import ProcessEngine
    from tessera_stac.publisher.samples import tiles as sample
    from tessera_stac.publisher.watersheds.layer import read_mws_layer

    base = tmp_path_factory.mktemp("change")
    layer = read_mws_layer(bhavnagar_geojson)
    frame = layer.frame
    # change on purpose the land under two MWS lying inside the east cell
    east = shapely.box(72.0, 21.8, 72.1, 21.9)
    inside = frame[frame.geometry.within(east)]
    assert len(inside) >= 2
    chosen = inside.iloc[:2]
    box = tuple(float(v) for v in chosen.total_bounds)
    opts = sample.SampleOptions(zero_fraction=0.01, change_bbox=box, change_from=2024)
    source, dest = base / "source", base / "published"
    cells = [GridCell.parse(g) for g in GRIDS]
    for cell in cells:
        for year in YEARS:
            sample.write_tile(source, cell, year, opts)
    engine = ProcessEngine(2)
    report = run.publish(
        tiles.sources_for(str(source), cells, YEARS), str(dest), engine=engine, report=None
    )
    assert not report.failed, [o.reason for o in report.failed]
    within = frame[frame.geometry.within(shapely.box(*box))]
    return TwoYears(source, dest, layer, tuple(str(u) for u in within["uid"]), box)


@pytest.fixture(scope="session")
def cli_catalog(
    two_years: TwoYears, bhavnagar_geojson: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The CLI path: catalog build, watersheds publish, join 2023 and 2024, change."""
    import shutil

    from tessera_stac.cli.main import main

    root = tmp_path_factory.mktemp("change-cat") / "cat"
    shutil.copytree(two_years.dest, root)
    assert main(["catalog", "build", str(root)]) == 0
    publish = ["watersheds", "publish", str(bhavnagar_geojson), "--out", str(root)]
    names = ["--state", "Gujarat", "--district", "Bhavnagar", "--block", "Bhavnagar"]
    assert main([*publish, *names]) == 0
    mws_id = next((root / "corestack-mws").glob("*/*.json")).stem
    for year in YEARS:
        join = ["watersheds", "join", "--year", str(year), "--mws", mws_id, "--out", str(root)]
        assert main(join) == 0
    change = ["watersheds", "change", "--mws", mws_id, "--from", "2023", "--to", "2024"]
    assert main([*change, "--out", str(root), "--csv"]) == 0
    return root, mws_id

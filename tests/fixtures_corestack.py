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
"""

from __future__ import annotations

import json
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

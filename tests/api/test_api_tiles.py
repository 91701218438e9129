"""Map tiles over HTTP: one item, the mosaic of a year (two tiles, two UTM zones), PCA colours,
similarity to a point, and GDAL's WMTS driver reading the capabilities as QGIS would.

The expected pixels are computed independently: rio-tiler's bare ``Reader`` on each source COG
for the same web-mercator tile, the cell of each output pixel from its centre with pyproj, and
numpy for the dequantisation and the cosine similarity.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rio_tiler.io import Reader

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.api.tiles import LAYER_TITLES
from tessera_stac.catalog.constants import PROJECTION_FIELD
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_corestack import JOIN_TEST_YEAR, TEST_EMBEDDING_COLLECTION

LiveApi = Callable[[Any], str]
TMS = morecantile.tms.get("WebMercatorQuad")
COLL = TEST_EMBEDDING_COLLECTION
YEAR = JOIN_TEST_YEAR
RGB = {"assets": "embeddings|bidx=1,2,3", "resampling": "nearest"}
VECTORS = [("assets", "embeddings"), ("assets", "scales")]


@pytest.fixture
def tiles_root(join_tiles_built: Path) -> Path:
    """The 4 tiles around 72°E / 21.8°N as a built static catalog (session-wide, read-only)."""
    return join_tiles_built


@pytest.fixture
def api(pg_dsn: str, live_api: LiveApi, tiles_root: Path) -> str:
    url = live_api(create_app(ApiSettings(data_dir=tiles_root), pg_dsn))
    load(pg_dsn, str(tiles_root / "catalog.json"), base_url=url + "/data")
    return url


def npy(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
    """(data bands, valid mask) of a ``.npy`` tile (titiler appends the mask band)."""
    assert response.status_code == 200, response.text[:2000]
    arr = np.load(io.BytesIO(response.content))
    return arr[:-1], arr[-1] > 0


def cog(root: Path, lon: float, lat: float, name: str) -> Path:
    cell = GridCell.containing(lon, lat)
    return root / COLL / str(YEAR) / cell.name / name


def pixel_cells(tile: morecantile.Tile) -> np.ndarray:
    """Name of the 0.1° cell holding each output pixel centre (256 x 256)."""
    b = TMS.xy_bounds(tile)
    xs = b.left + (np.arange(256) + 0.5) * (b.right - b.left) / 256
    ys = b.top - (np.arange(256) + 0.5) * (b.top - b.bottom) / 256
    lon, lat = Transformer.from_crs(3857, 4326, always_xy=True).transform(*np.meshgrid(xs, ys))
    names = np.vectorize(lambda x, y: GridCell.containing(x, y).name)(lon, lat)
    return np.asarray(names)


def bare_tile(path: Path, tile: morecantile.Tile, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    with Reader(str(path)) as src:
        img = src.tile(tile.x, tile.y, tile.z, resampling_method="nearest", **kwargs)
    return np.ma.getdata(img.array), ~np.ma.getmaskarray(img.array).any(axis=0)


# the corner where the four cells meet: 72°E (UTM 42N | 43N), 21.8°N
CORNER = (72.0, 21.8)


def test_mosaic_has_no_seam_across_tiles_and_utm_zones(api: str, tiles_root: Path) -> None:
    tile = TMS.tile(*CORNER, 14)
    got = httpx.get(
        f"{api}/tiles/collections/{COLL}/years/{YEAR}/tiles/WebMercatorQuad/"
        f"{tile.z}/{tile.x}/{tile.y}.npy",
        params=RGB,
        timeout=120,
    )
    data, valid = npy(got)
    cells = pixel_cells(tile)
    assert len(set(cells.ravel())) == 4  # the tile straddles both boundaries
    expected = np.zeros_like(data)
    expected_valid = np.zeros(valid.shape, dtype=bool)
    for name in set(cells.ravel()):
        cell = GridCell.parse(name)
        src, ok = bare_tile(
            cog(tiles_root, cell.lon, cell.lat, "embeddings.tif"), tile, indexes=(1, 2, 3)
        )
        inside = cells == name
        expected[:, inside] = src[:, inside]
        expected_valid[inside] = ok[inside]
    assert expected_valid.mean() > 0.8
    assert np.array_equal(valid, expected_valid), "gaps or double drawing at the boundaries"
    assert np.array_equal(data[:, valid], expected[:, valid]), "a pixel differs from its item"


def dequantised_tile(
    root: Path, cell: GridCell, tile: morecantile.Tile
) -> tuple[np.ndarray, np.ndarray]:
    codes, ok = bare_tile(cog(root, cell.lon, cell.lat, "embeddings.tif"), tile)
    scales, ok_s = bare_tile(cog(root, cell.lon, cell.lat, "scales.tif"), tile)
    values = codes.astype(np.float32) * scales[0][None]
    valid = ok & ok_s & (codes != -128).all(axis=0) & np.isfinite(scales[0])
    return values, valid


def test_similarity_tile_equals_numpy_cosine(api: str, tiles_root: Path) -> None:
    # a pixel centre of the source tile (72.05, 21.85), read directly with rasterio
    path = cog(tiles_root, 72.05, 21.85, "embeddings.tif")
    with (
        rasterio.open(path) as ds,
        rasterio.open(cog(tiles_root, 72.05, 21.85, "scales.tif")) as sds,
    ):
        row, col = 700, 300
        x, y = ds.xy(row, col)
        window = rasterio.windows.Window(col, row, 1, 1)
        query = (
            ds.read(window=window)[:, 0, 0].astype(np.float32) * sds.read(1, window=window)[0, 0]
        )
        lon, lat = Transformer.from_crs(ds.crs, 4326, always_xy=True).transform(x, y)
    assert np.isfinite(query).all()
    tile = TMS.tile(lon, lat, 16)
    got = httpx.get(
        f"{api}/tiles/collections/{COLL}/years/{YEAR}/tiles/WebMercatorQuad/"
        f"{tile.z}/{tile.x}/{tile.y}.npy",
        params=[*VECTORS, ("algorithm", "similarity"),
                ("algorithm_params", json.dumps({"lon": lon, "lat": lat}))],
        timeout=120,
    )  # fmt: skip
    data, valid = npy(got)
    values, expected_valid = dequantised_tile(tiles_root, GridCell.containing(lon, lat), tile)
    assert set(pixel_cells(tile).ravel()) == {GridCell.containing(lon, lat).name}
    norms = np.linalg.norm(values, axis=0) * np.linalg.norm(query)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.einsum("dhw,d->hw", values, query) / norms
    assert np.array_equal(valid, expected_valid)
    assert np.allclose(data[0][valid], expected[valid], atol=1e-5)
    # the query pixel is the maximum (cos = 1)
    b = TMS.xy_bounds(tile)
    qx, qy = Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    r = int((b.top - qy) / (b.top - b.bottom) * 256)
    c = int((qx - b.left) / (b.right - b.left) * 256)
    assert data[0, r, c] == pytest.approx(1.0, abs=1e-5)
    assert data[0][valid].max() == pytest.approx(data[0, r, c], abs=1e-6)


def test_pca_colours_agree_between_item_and_mosaic(api: str) -> None:
    collection = httpx.get(f"{api}/collections/{COLL}").json()
    projection = collection[PROJECTION_FIELD]
    assert projection["method"] == "pca" and np.asarray(projection["basis"]).shape == (128, 3)
    cell = GridCell.containing(71.95, 21.75)
    tile = TMS.tile(cell.lon, cell.lat, 14)
    params = [*VECTORS, ("algorithm", "pca")]
    item = httpx.get(
        f"{api}/tiles/collections/{COLL}/items/{cell.name}_{YEAR}/tiles/WebMercatorQuad/"
        f"{tile.z}/{tile.x}/{tile.y}.npy", params=params, timeout=120,
    )  # fmt: skip
    mosaic = httpx.get(
        f"{api}/tiles/collections/{COLL}/years/{YEAR}/tiles/WebMercatorQuad/"
        f"{tile.z}/{tile.x}/{tile.y}.npy", params=params, timeout=120,
    )  # fmt: skip
    (a, va), (b, vb) = npy(item), npy(mosaic)
    assert a.shape[0] == 3 and va.mean() > 0.8
    assert np.array_equal(va, vb) and np.array_equal(a[:, va], b[:, vb])
    assert all(np.unique(a[i][va]).size > 50 for i in range(3)), "the colours do not vary"
    png = httpx.get(
        f"{api}/tiles/collections/{COLL}/years/{YEAR}/tiles/WebMercatorQuad/"
        f"{tile.z}/{tile.x}/{tile.y}.png", params=params, timeout=120,
    )  # fmt: skip
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_tilejson_and_wmts_read_by_gdal(api: str, tmp_path: Path) -> None:
    cell = GridCell.containing(72.05, 21.75)
    base = f"{api}/tiles/collections/{COLL}/items/{cell.name}_{YEAR}"
    tj = httpx.get(f"{base}/WebMercatorQuad/tilejson.json", params=RGB, timeout=60)
    assert tj.status_code == 200, tj.text
    assert tj.json()["tiles"][0].startswith(f"{base}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}")
    caps = httpx.get(f"{base}/WMTSCapabilities.xml", params=RGB, timeout=60)
    assert caps.status_code == 200 and "<Capabilities" in caps.text, caps.text[:500]
    xml = tmp_path / "wmts.xml"
    xml.write_text(caps.text)
    with rasterio.open(f"WMTS:{xml}") as top:
        layers = top.subdatasets  # one layer per render and one for the query parameters
    assert layers, caps.text[:1000]
    ours = [name for name in layers if "preview" not in name] or layers
    # the layer of the web map's tile matrix set (the first listed, CDB1GlobalGrid, has its
    # finest level at ~1 cm pixels: a GDAL warp per tile, seconds each on a busy machine)
    ours.sort(key=lambda name: "_WebMercatorQuad_" not in name)
    with rasterio.open(ours[0]) as ds:
        assert ds.count >= 3
        # a 256 px window at the cell's centre, at the finest level GDAL offers
        x, y = Transformer.from_crs(4326, ds.crs, always_xy=True).transform(cell.lon, cell.lat)
        row, col = ds.index(x, y)
        window = rasterio.windows.Window(col - 128, row - 128, 256, 256)
        data = ds.read(window=window)
    assert data.shape[1:] == (256, 256)
    alpha = data[3] if data.shape[0] > 3 else np.full(data.shape[1:], 255)
    assert (alpha > 0).mean() > 0.5 and data[:3, alpha > 0].std() > 5


def test_similarity_errors(api: str) -> None:
    base = f"{api}/tiles/collections/{COLL}/years/{YEAR}/tiles/WebMercatorQuad/14/0/0.png"
    nowhere = json.dumps({"lon": 10.0, "lat": 10.0})
    far = httpx.get(
        base,
        params=[*VECTORS, ("algorithm", "similarity"), ("algorithm_params", nowhere)],
        timeout=60,
    )
    assert far.status_code == 404, far.text
    missing = httpx.get(base, params=[*VECTORS, ("algorithm", "similarity")], timeout=60)
    assert missing.status_code == 400, missing.text


def _png_rgba(response: httpx.Response) -> np.ndarray:
    from PIL import Image

    assert response.status_code == 200, response.text[:1000]
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))


def test_items_and_collections_carry_web_map_links_that_draw(api: str) -> None:
    cell = GridCell.containing(71.95, 21.85)
    item = httpx.get(f"{api}/collections/{COLL}/items/{cell.name}_{YEAR}").json()
    xyz = [ln for ln in item["links"] if ln["rel"] == "xyz"]
    assert [ln["title"] for ln in xyz] == [LAYER_TITLES[n] for n in ("pca", "rgb", "scales")]
    tile = TMS.tile(cell.lon, cell.lat, 14)
    for link in xyz:
        href = link["href"].replace("{z}", str(tile.z)).replace("{x}", str(tile.x))
        rgba = _png_rgba(httpx.get(href.replace("{y}", str(tile.y)), timeout=120))
        shown = rgba[..., 3] > 0
        assert shown.mean() > 0.5 and rgba[..., :3][shown].std() > 5, link["title"]
    wmts = next(ln for ln in item["links"] if ln["rel"] == "wmts")
    caps = httpx.get(wmts["href"], timeout=60)
    assert f"<ows:Identifier>{wmts['wmts:layer']}</ows:Identifier>" in caps.text
    tilejson = next(ln for ln in item["links"] if ln["rel"] == "tilejson")
    assert httpx.get(tilejson["href"], timeout=60).json()["tiles"]
    # the collection: one mosaic per year, in PCA colours
    collection = httpx.get(f"{api}/collections/{COLL}").json()
    mosaic = [ln for ln in collection["links"] if ln["rel"] == "xyz"]
    assert len(mosaic) == 1 and f"/years/{YEAR}/" in mosaic[0]["href"]
    assert "algorithm=pca" in mosaic[0]["href"]
    corner = TMS.tile(*CORNER, 14)
    href = mosaic[0]["href"].replace("{z}", "14").replace("{x}", str(corner.x))
    rgba = _png_rgba(httpx.get(href.replace("{y}", str(corner.y)), timeout=120))
    assert (rgba[..., 3] > 0).mean() > 0.8

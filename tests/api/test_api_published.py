"""End to end on the real published sample: two tiles either side of 72°E (UTM 42N / 43N).

The catalog is loaded with hrefs through the API's ``/data`` route; answers are compared with the
generated source tiles (``q * s`` from the geotessera-layout ``.npy`` files).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.pgstac.load import load
from tests.conftest import SHARED, our_schemas

LiveApi = Callable[[Any], str]


@pytest.fixture
def real_api(pg_dsn: str, live_api: LiveApi, published_catalog: dict[str, Any]) -> str:
    """The API serving the published sample, loaded with hrefs through its /data route."""
    url = live_api(create_app(ApiSettings(data_dir=published_catalog["root"]), pg_dsn))
    load(pg_dsn, str(published_catalog["catalog"]), base_url=url + "/data")
    return url


def source_arrays(published_catalog: dict[str, Any], grid: str) -> tuple[Any, Any]:
    """(codes HWC int8, scales HW float32) of the generated source tile."""
    folder = published_catalog["sample"].source / "global_0.1_degree_representation" / "2024"
    q = np.load(folder / grid / f"{grid}.npy", mmap_mode="r")
    s = np.load(folder / grid / f"{grid}_scales.npy", mmap_mode="r")
    return q, s


def _tile(published_catalog: dict[str, Any], grid: str) -> Any:
    return next(t for t in published_catalog["sample"].tiles if t.cell.name == grid)


def pixels(published_catalog: dict[str, Any], grid: str, valid: bool, n: int) -> list[Any]:
    """``n`` pixels (row, col, lon, lat) of ``grid`` whose centre is in its cell, valid or not."""
    tile = _tile(published_catalog, grid)
    folder = published_catalog["root"] / tile.collection_id / "2024" / grid
    with rasterio.open(folder / "scales.tif") as ds:
        scales = ds.read(1)
    a, _, c, _, e, f = tile.transform
    back = Transformer.from_crs(f"EPSG:{tile.epsg}", "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(11)
    found = []
    for _ in range(20000):
        row, col = int(rng.integers(0, scales.shape[0])), int(rng.integers(0, scales.shape[1]))
        if bool(np.isfinite(scales[row, col])) != valid:
            continue
        lon, lat = back.transform(c + (col + 0.5) * a, f + (row + 0.5) * e)
        if GridCell.containing(lon, lat).name == grid:
            found.append((row, col, lon, lat))
            if len(found) == n:
                return found
    raise AssertionError(f"no {'valid' if valid else 'invalid'} pixel found in {grid}")


@pytest.mark.parametrize("grid", ["grid_71.95_21.85", "grid_72.05_21.85"])
def test_point_equals_source_q_times_s(
    real_api: str, published_catalog: dict[str, Any], grid: str
) -> None:
    q, s = source_arrays(published_catalog, grid)
    tile = _tile(published_catalog, grid)
    for row, col, lon, lat in pixels(published_catalog, grid, valid=True, n=3):
        got = httpx.get(
            real_api + "/embeddings/position", params={"lon": lon, "lat": lat, "year": 2024}
        )
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["item"] == tile.item_id and body["pixel"]["crs"] == f"EPSG:{tile.epsg}"
        assert (body["pixel"]["row"], body["pixel"]["col"]) == (row, col)
        expected = q[row, col, :].astype(np.float32) * s[row, col]
        assert np.array_equal(np.array(body["embedding"], dtype=np.float32), expected)
        assert body["dimensions"] == 128


def test_invalid_pixel_is_422_with_reason(real_api: str, published_catalog: dict[str, Any]) -> None:
    row, col, lon, lat = pixels(published_catalog, "grid_72.05_21.85", valid=False, n=1)[0]
    got = httpx.get(
        real_api + "/embeddings/position", params={"lon": lon, "lat": lat, "year": 2024}
    )
    assert got.status_code == 422
    assert got.json()["code"] == "InvalidPixel"
    assert f"row {row}, col {col}" in got.json()["description"]


def test_zonal_statistics_match_the_source(
    real_api: str, published_catalog: dict[str, Any]
) -> None:
    from shapely import contains_xy
    from shapely.geometry import Polygon, mapping

    polygon = Polygon([(71.99, 21.82), (72.012, 21.821), (72.01, 21.835), (71.992, 21.833)])
    got = httpx.post(
        real_api + "/embeddings/area", json={"geometry": mapping(polygon), "year": 2024}
    )
    assert got.status_code == 200, got.text
    body = got.json()
    count = valid = 0
    total = np.zeros(128)
    for tile in published_catalog["sample"].tiles:
        q, s = source_arrays(published_catalog, tile.cell.name)
        folder = published_catalog["root"] / tile.collection_id / "2024" / tile.cell.name
        with rasterio.open(folder / "scales.tif") as ds:
            published_ok = np.isfinite(ds.read(1))
        a, _, c, _, e, f = tile.transform
        rows, cols = np.mgrid[0 : s.shape[0], 0 : s.shape[1]]
        back = Transformer.from_crs(f"EPSG:{tile.epsg}", "EPSG:4326", always_xy=True)
        lons, lats = back.transform(c + (cols + 0.5) * a, f + (rows + 0.5) * e)
        west, south, east, north = tile.cell.bounds
        inside = (lons >= west) & (lons < east) & (lats >= south) & (lats < north)
        inside &= contains_xy(polygon, lons, lats)
        ok = inside & published_ok
        count += int(inside.sum())
        valid += int(ok.sum())
        total += (np.asarray(q)[ok].astype(np.float32) * np.asarray(s)[ok][:, None]).sum(0)
    assert body["count"] == count and body["valid"] == valid and 0 < valid <= count
    assert {src["crs"] for src in body["sources"]} == {"EPSG:32642", "EPSG:32643"}
    assert np.allclose(body["mean"], total / valid, rtol=1e-5, atol=1e-5)


def test_gdal_reads_the_published_cog_through_the_api(
    real_api: str, published_catalog: dict[str, Any]
) -> None:
    item = httpx.get(
        real_api + "/collections/tessera-embeddings-v1/items/grid_72.05_21.85_2024"
    ).json()
    href = item["assets"]["embeddings"]["href"]
    assert href.startswith(real_api + "/data/")
    q, _ = source_arrays(published_catalog, "grid_72.05_21.85")
    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_USE_HEAD": "NO"}
    with rasterio.Env(**env), rasterio.open("/vsicurl/" + href) as src:
        assert src.count == 128 and src.crs.to_epsg() == 32643
        window = rasterio.windows.Window(500, 400, 3, 2)
        block = src.read(window=window)
    nodata = block == -128
    source = np.moveaxis(np.asarray(q[400:402, 500:503, :]), -1, 0)
    assert np.array_equal(block[~nodata], source[~nodata])


def test_landing_links_embedding_and_model_collections(real_api: str) -> None:
    landing = httpx.get(real_api + "/").json()
    children = [
        link["href"].rsplit("/", 1)[1] for link in landing["links"] if link["rel"] == "child"
    ]
    assert children[:2] == ["tessera-embeddings-v1", "tessera-models"]
    schema = next(link for link in landing["links"] if link["rel"] == "describedby")
    assert httpx.get(schema["href"]).json()["$id"].endswith("/embedding/v1.0.0/schema.json")


@pytest.mark.slow  # stac-api-validator over the whole API
def test_stac_api_validator_on_the_published_sample(
    real_api: str, published_catalog: dict[str, Any]
) -> None:
    geometry = published_catalog["items"][0]["geometry"]
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import stac_offline; "
        "stac_offline.install(extra=json.loads(sys.argv[2])); "
        # pystac-client's own IO bypasses the mirror: give pystac the pre-cached validator
        "import pystac.validation as v; v.set_validator(stac_offline.pystac_validator()); "
        "sys.exit(stac_offline.main(sys.argv[3:]))"
    )
    args = ["stac-api-validator", "--root-url", real_api + "/", "--log-level", "INFO"]
    args += ["--collection", "tessera-embeddings-v1", "--geometry", json.dumps(geometry)]
    for conformance in [
        "core",
        "collections",
        "features",
        "item-search",
        "filter",
        "item-search#sort",
        "item-search#fields",
        "item-search#query",
    ]:
        args += ["--conformance", conformance]
    query = {
        "comparison-field": "embedding:dimensions",
        "eq-value": "128",
        "neq-value": "3",
        "lt-value": "129",
        "lte-value": "128",
        "gt-value": "127",
        "gte-value": "128",
        "substring-field": "proj:code",
        "starts-with-value": "EPSG:326",
        "ends-with-value": "42",
        "contains-value": "3264",
        # the validator checks "in" answers by set(property value) & values: for a string
        # property that is its characters, so one single-character value is listed too
        "in-field": "proj:code",
        "in-values": "EPSG:32642,E",
    }
    for key, value in query.items():
        args += [f"--query-{key}", value]
    args += ["--fields-nested-property", "properties.proj:code"]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(SHARED / "tools"), json.dumps(our_schemas()), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert re.search(r"^Errors: none", output, re.M), output
    for name in [
        "Core",
        "Collections",
        "Features",
        "Item Search",
        "Item Search - Filter Extension",
    ]:
        assert f"Validating STAC API - {name} conformance class" in output, name

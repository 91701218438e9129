"""Heads over HTTP: class tiles in class colours, algorithm=classify (published and temporary
models), POST /classify, and the per-MWS class routes, against a live API on real pgSTAC.

Expected pixels are computed independently: rio-tiler's bare ``Reader`` on the source COGs for
the same web-mercator tile, numpy for the dequantisation, the head's own numpy predict (whose
agreement with scikit-learn ``tests/classify`` checks), and the published GeoParquet tables.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import morecantile
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from PIL import Image
from pyproj import Transformer
from rio_tiler.io import Reader

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.heads import Head
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_classes import CLASS_YEARS, TEST_CLASSES, TEST_MODEL, copy_tree

LiveApi = Callable[[Any], str]
TMS = morecantile.tms.get("WebMercatorQuad")
VECTORS = [("assets", "embeddings"), ("assets", "scales")]
HEAD_NAME = "apihead"
CELL = GridCell.parse("grid_72.05_21.85")
MWS_CLASSES = "corestack-mws-classes"


def sample_vectors(root: Path, n: int, seed: int) -> tuple[Any, Any, Any]:
    """(vectors (k, 128), lons, lats) at up to ``n`` random valid pixel centres of CELL."""
    folder = embedding_folder(root, CELL)
    rng = np.random.default_rng(seed)
    with (
        rasterio.open(folder / "embeddings.tif") as ds,
        rasterio.open(folder / "scales.tif") as sd,
    ):
        rows = rng.integers(50, ds.height - 50, 3 * n)
        cols = rng.integers(50, ds.width - 50, 3 * n)
        # one read of the rows spanned (not a window per pixel: each decodes a whole block)
        top, bottom = int(rows.min()), int(rows.max()) + 1
        window = ((top, bottom), (0, ds.width))
        codes = ds.read(window=window)[:, rows - top, cols].T
        scales = sd.read(1, window=window)[rows - top, cols]
        xs, ys = rasterio.transform.xy(ds.transform, rows, cols, offset="center")
        lon, lat = Transformer.from_crs(ds.crs, 4326, always_xy=True).transform(xs, ys)
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero((codes != -128).all(axis=1) & (scales > 0) & (scales < 1))[:n]
    values = codes[ok].astype(np.float32) * scales[ok, None].astype(np.float32)
    return values, np.asarray(lon)[ok], np.asarray(lat)[ok]


def fitted_head(root: Path, name: str = HEAD_NAME) -> Head:
    """A 3-class logistic head fitted by scikit-learn on k-means clusters of real vectors (its
    classes are balanced and spatially coherent)."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression

    x, _, _ = sample_vectors(root, 1500, seed=11)
    clusters = KMeans(3, n_init=4, random_state=0).fit_predict(x)
    fit = LogisticRegression(max_iter=2000).fit(x, clusters)
    return Head.from_dict(
        {
            "type": "tessera-head",
            "version": 1,
            "name": name,
            "kind": "logistic",
            "task": "classification",
            "collection": "tessera-embeddings-v1",
            "year": 2024,
            "classes": [
                {"value": c["value"], "name": c["name"], "color": c["color"]} for c in TEST_CLASSES
            ],
            "coef": fit.coef_.tolist(),
            "intercept": fit.intercept_.tolist(),
        }
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


@pytest.fixture(scope="module")
def class_root(class_catalog: Any, open_tmp: Callable[[str], Path]) -> dict[str, Any]:
    """A complete static catalog: embeddings (built), the MWS layer, the class maps of
    ``testhead`` as a collection, a published model ``apihead`` in ``tessera-models``, and
    the per-MWS class tables of 2024 and 2025 (with the change)."""
    from datetime import UTC, datetime

    from tessera_stac.catalog.static import build_static_catalog, write_root
    from tessera_stac.catalog.store import LocalStore
    from tessera_stac.publisher.classify.watersheds import classes_per_watershed, write_classes
    from tessera_stac.publisher.join.join import mws_source

    root = open_tmp("api-classes") / "published"
    copy_tree(class_catalog.root, root)
    report = build_static_catalog(LocalStore(root), geoparquet=False)
    assert report.ok, report.to_dict()
    cid = f"tessera-classes-{TEST_MODEL}"
    # the class maps as a collection (items in {item}/)
    links = [
        {"rel": "root", "href": "../catalog.json"},
        {"rel": "parent", "href": "../catalog.json"},
    ]
    first = json.loads(class_catalog.class_items[2024][0].read_text())
    for paths in class_catalog.class_items.values():
        for p in paths:
            links.append({"rel": "item", "href": f"./{p.parent.name}/{p.name}"})
    _write_json(
        root / cid / "collection.json",
        {
            "type": "Collection",
            "stac_version": "1.1.0",
            "stac_extensions": [
                "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
                "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
            ],
            "id": cid,
            "description": "Class maps of the test head",
            "license": "CC-BY-4.0",
            "extent": {
                "spatial": {"bbox": [[71.9, 21.8, 72.1, 21.9]]},
                "temporal": {"interval": [["2024-01-01T00:00:00Z", "2025-12-31T23:59:59Z"]]},
            },
            "item_assets": {
                "classes": {
                    "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data"],
                    "classification:classes": first["assets"]["classes"]["classification:classes"],
                }
            },
            "links": links,
        },
    )
    # a published model: an item of tessera-models with the head JSON as its `head` asset
    head = fitted_head(root)
    models = root / "tessera-models"
    (models / HEAD_NAME).mkdir(parents=True, exist_ok=True)
    (models / HEAD_NAME / "head.json").write_bytes(head.to_json())
    _write_json(
        models / HEAD_NAME / f"{HEAD_NAME}.json",
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": HEAD_NAME,
            "collection": "tessera-models",
            "geometry": shapely.geometry.mapping(shapely.box(71.9, 21.8, 72.1, 21.9)),
            "bbox": [71.9, 21.8, 72.1, 21.9],
            "properties": {"datetime": "2024-01-01T00:00:00Z"},
            "assets": {
                "head": {
                    "href": "./head.json",
                    "type": "application/json",
                    "roles": ["mlm:model", "data"],
                    "file:size": (models / HEAD_NAME / "head.json").stat().st_size,
                }
            },
            "links": [],
        },
    )  # fmt: skip
    collection = json.loads((models / "collection.json").read_text())
    collection["links"].append({"rel": "item", "href": f"./{HEAD_NAME}/{HEAD_NAME}.json"})
    _write_json(models / "collection.json", collection)
    # the per-MWS class tables
    item, href, layer = mws_source(root, class_catalog.mws_item_id, None)
    results = classes_per_watershed(root, TEST_MODEL, list(CLASS_YEARS), item, layer.frame)
    written = write_classes(results, root, item, href, datetime(2026, 1, 1, tzinfo=UTC))
    write_root(LocalStore(root))
    return {"root": root, "head": head, "results": results, "written": written}


def serve(pg_dsn: str, live_api: LiveApi, root: Path, **settings: Any) -> str:
    return live_api(create_app(ApiSettings(data_dir=root, **settings), pg_dsn))


@pytest.fixture(scope="module")
def api_db(pg_cluster: Any, class_root: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(url, dsn)``: one database and API with ``class_root`` loaded, shared by the module's
    tests (they read it; the temporary models POST /classify adds are named apart)."""
    from tests.conftest import TEMPLATE_DB, LiveServer

    root = class_root["root"]
    with pg_cluster.template_clone(TEMPLATE_DB, f"t_cls_{uuid.uuid4().hex[:10]}") as dsn:
        server = LiveServer(create_app(ApiSettings(data_dir=root), dsn)).start()
        try:
            load(dsn, str(root / "catalog.json"), base_url=server.url + "/data")
            yield server.url, dsn
        finally:
            server.stop()


@pytest.fixture
def api(api_db: tuple[str, str]) -> str:
    return api_db[0]


def bare_tile(path: Path, tile: morecantile.Tile) -> tuple[np.ndarray, np.ndarray]:
    with Reader(str(path)) as src:
        img = src.tile(tile.x, tile.y, tile.z, resampling_method="nearest")
    return np.ma.getdata(img.array), ~np.ma.getmaskarray(img.array).any(axis=0)


def embedding_folder(root: Path, cell: GridCell, year: int = 2024) -> Path:
    return next((root / "tessera-embeddings-v1" / str(year)).glob(cell.name))


def dequantised_tile(root: Path, cell: GridCell, tile: morecantile.Tile) -> tuple[Any, Any]:
    folder = embedding_folder(root, cell)
    codes, ok = bare_tile(folder / "embeddings.tif", tile)
    scales, ok_s = bare_tile(folder / "scales.tif", tile)
    with np.errstate(invalid="ignore"):
        valid = ok & ok_s & (codes != -128).all(axis=0) & (scales[0] > 0) & (scales[0] < 1)
    values = np.moveaxis(codes.astype(np.float32) * scales[0][None], 0, -1)
    return values, valid


def npy(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
    assert response.status_code == 200, response.text[:2000]
    arr = np.load(io.BytesIO(response.content))
    return arr[:-1], arr[-1] > 0


def inner_tile(z: int = 15) -> morecantile.Tile:
    """A tile wholly inside CELL (so the mosaic and the item agree)."""
    return TMS.tile(CELL.lon + 0.01, CELL.lat + 0.01, z)


def rgba(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


# ------------------------------------------------------------------------- class tiles
def test_class_item_tiles_in_class_colours(api: str, class_root: dict[str, Any]) -> None:
    cid, iid = f"tessera-classes-{TEST_MODEL}", f"{CELL.name}_2024"
    item = httpx.get(f"{api}/collections/{cid}/items/{iid}", timeout=60).json()
    xyz = [ln for ln in item["links"] if ln["rel"] == "xyz"]
    assert xyz and "assets=classes" in xyz[0]["href"], item["links"]
    assert any(ln["rel"] == "wmts" for ln in item["links"])
    tile = inner_tile()
    url = xyz[0]["href"].format(z=tile.z, x=tile.x, y=tile.y)
    got = httpx.get(url, timeout=120)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png", got.text[:500]
    image = np.asarray(Image.open(io.BytesIO(got.content)).convert("RGBA"))
    path = class_root["root"] / cid / iid / "classes.tif"
    classes, _ = bare_tile(path, tile)
    expected = np.zeros((256, 256, 4), dtype=np.uint8)
    for c in TEST_CLASSES:
        expected[classes[0] == c["value"]] = (*rgba(c["color"]), 255)
    assert np.array_equal(image, expected)
    assert len({tuple(p) for p in image.reshape(-1, 4)}) >= 3  # several classes drawn
    # the same tile again and again on one connection (cache hits through Brotli)
    with httpx.Client(timeout=120, headers={"accept-encoding": "br"}) as client:
        again = [client.get(url) for _ in range(3)]
    assert all(r.status_code == 200 and r.content == got.content for r in again)
    # an explicit colormap still wins
    grey = httpx.get(url + "&colormap_name=greys&rescale=0,3", timeout=60)
    assert grey.status_code == 200
    assert not np.array_equal(
        np.asarray(Image.open(io.BytesIO(grey.content)).convert("RGBA")), image
    )
    # the class mosaic of a year, across the two tiles and UTM zones, has the same colours
    corner = TMS.tile(72.0, 21.85, 14)
    mosaic = httpx.get(
        f"{api}/tiles/collections/{cid}/years/2024/tiles/WebMercatorQuad/"
        f"{corner.z}/{corner.x}/{corner.y}.png?assets=classes", timeout=120,
    )  # fmt: skip
    assert mosaic.status_code == 200, mosaic.text[:500]
    pixels = np.asarray(Image.open(io.BytesIO(mosaic.content)).convert("RGBA")).reshape(-1, 4)
    drawn = {tuple(p[:3]) for p in pixels if p[3] == 255}
    assert drawn == {rgba(c["color"]) for c in TEST_CLASSES}
    collection = httpx.get(f"{api}/collections/{cid}", timeout=60).json()
    assert any("/years/2025/" in ln["href"] for ln in collection["links"] if ln["rel"] == "xyz")


# ------------------------------------------------------------------- classify on the fly
def test_classify_published_model_equals_head(api: str, class_root: dict[str, Any]) -> None:
    tile = TMS.tile(CELL.lon, CELL.lat, 13)  # ~4.5 km, inside the cell
    assert set(TMS.bounds(tile)) and CELL.lon - 0.05 < TMS.bounds(tile).left
    params = [
        *VECTORS,
        ("algorithm", "classify"),
        ("algorithm_params", json.dumps({"model": HEAD_NAME})),
    ]
    base = f"{api}/tiles/collections/tessera-embeddings-v1"
    item = httpx.get(
        f"{base}/items/{CELL.name}_2024/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy",
        params=params, timeout=120,
    )  # fmt: skip
    mosaic = httpx.get(
        f"{base}/years/2024/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy",
        params=params, timeout=120,
    )  # fmt: skip
    (a, va), (b, vb) = npy(item), npy(mosaic)
    values, valid = dequantised_tile(class_root["root"], CELL, tile)
    expected, _ = class_root["head"].predict(values, valid)
    assert np.array_equal(va, valid) and np.array_equal(vb, valid)
    assert np.array_equal(a[0][valid], expected[valid]) and np.array_equal(
        b[0][valid], expected[valid]
    )
    assert len(np.unique(expected[valid])) >= 2 and valid.mean() > 0.3
    png = httpx.get(
        f"{base}/years/2024/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png",
        params=params, timeout=120,
    )  # fmt: skip
    image = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGBA"))
    for c in TEST_CLASSES:  # drawn in the head's colours
        sel = valid & (expected == c["value"])
        assert (image[sel][:, :3] == rgba(c["color"])).all()
    assert (image[~valid][:, 3] == 0).all()
    tj = httpx.get(f"{base}/years/2024/WebMercatorQuad/tilejson.json", params=params, timeout=60)
    assert tj.status_code == 200, tj.text


TILE_ERRORS: list[tuple[dict[str, Any], int, str]] = [
    ({"model": "../../etc/passwd"}, 400, "model name"),
    ({"model": "no-such-head"}, 404, "no published model"),
    ({"model": "tmp-000000000000"}, 404, "no temporary model"),
    ({}, 400, "model"),
]


def test_classify_tile_errors(api: str) -> None:
    tile = inner_tile()
    for params, status, needle in TILE_ERRORS:
        got = httpx.get(
            f"{api}/tiles/collections/tessera-embeddings-v1/years/2024/tiles/WebMercatorQuad/"
            f"{tile.z}/{tile.x}/{tile.y}.png",
            params=[*VECTORS, ("algorithm", "classify"), ("algorithm_params", json.dumps(params))],
            timeout=60,
        )
        assert got.status_code == status and needle in got.text, (params, got.text[:500])


# ------------------------------------------------------------------------ POST /classify
def labels_from_head(root: Path, head: Head, n: int = 240) -> list[dict[str, Any]]:
    """Labels at random valid pixel centres of CELL, classed by ``head`` (so learnable)."""
    x, lon, lat = sample_vectors(root, n, seed=3)
    classes, _ = head.predict(x, np.ones(len(x), dtype=bool))
    names = {c.value: c.name for c in head.classes}
    return [
        {"lon": float(lon[i]), "lat": float(lat[i]), "class": names[int(classes[i])]}
        for i in range(len(x))
    ]


def test_post_classify_model_works_at_once_on_every_worker(
    api_db: tuple[str, str], class_root: dict[str, Any], live_api: LiveApi
) -> None:
    api, pg_dsn = api_db
    labels = labels_from_head(class_root["root"], class_root["head"])
    body = {"year": 2024, "labels": labels, "classes": [{"name": "Cropland", "color": "#123456"}]}
    got = httpx.post(f"{api}/classify", json=body, timeout=300)
    assert got.status_code == 201, got.text[:2000]
    data = got.json()
    name = data["model"]
    assert name.startswith("tmp-") and data["collection"] == "tessera-embeddings-v1"
    cv = data["report"]["cross_validation"]
    assert cv["random"]["accuracy"] > 0.8 and "accuracy" in cv["spatial"]
    assert len(cv["random"]["confusion"]) == 3 and sum(map(sum, cv["random"]["confusion"])) == len(
        labels
    )
    assert {c["name"]: c["color"] for c in data["classes"]}["Cropland"] == "#123456"
    # the stored model equals the published format; the tile is the head applied per pixel
    stored = httpx.get(f"{api}/classify/{name}", timeout=60).json()
    head = Head.from_dict(stored["model"])
    tile = TMS.tile(CELL.lon, CELL.lat, 13)
    url = data["tiles"]["xyz"].format(z=tile.z, x=tile.x, y=tile.y).replace(".png?", ".npy?")
    classes, valid = npy(httpx.get(url, timeout=120))
    values, expected_valid = dequantised_tile(class_root["root"], CELL, tile)
    expected, _ = head.predict(values, expected_valid)
    assert np.array_equal(valid, expected_valid)
    assert np.array_equal(classes[0][valid], expected[valid])
    reference, _ = class_root["head"].predict(values, expected_valid)
    names = {c.value: c.name for c in head.classes}
    ref_names = {c.value: c.name for c in class_root["head"].classes}
    learned = np.vectorize(names.get)(expected[valid])
    truth = np.vectorize(ref_names.get)(reference[valid])
    assert (learned == truth).mean() > 0.8  # it learned the head the labels came from
    # another API process on the same database (another worker) draws it at once
    other = serve(pg_dsn, live_api, class_root["root"])
    again = httpx.get(url.replace(api, other), timeout=120)
    assert again.status_code == 200 and again.content == httpx.get(url, timeout=120).content
    # k-NN too
    knn = httpx.post(f"{api}/classify", json={**body, "kind": "knn", "k": 3}, timeout=300)
    assert knn.status_code == 201, knn.text[:1000]
    assert knn.json()["model"] != name


def test_temporary_models_are_bounded(
    class_root: dict[str, Any], pg_dsn: str, live_api: LiveApi
) -> None:
    root = class_root["root"]
    url = serve(pg_dsn, live_api, root, classify_max_temp_models=2)
    load(pg_dsn, str(root / "catalog.json"), base_url=url + "/data")
    labels = labels_from_head(root, class_root["head"], n=40)
    names = []
    for _ in range(3):
        got = httpx.post(f"{url}/classify", json={"year": 2024, "labels": labels}, timeout=300)
        assert got.status_code == 201, got.text[:1000]
        names.append(got.json()["model"])
    assert httpx.get(f"{url}/classify/{names[0]}", timeout=60).status_code == 404
    assert all(httpx.get(f"{url}/classify/{n}", timeout=60).status_code == 200 for n in names[1:])
    # a published model name is never a temporary one
    assert httpx.get(f"{url}/classify/{HEAD_NAME}", timeout=60).status_code == 404


def test_post_classify_bad_input(api: str, class_root: dict[str, Any]) -> None:
    good = labels_from_head(class_root["root"], class_root["head"], n=20)

    def post(body: Any) -> httpx.Response:
        return httpx.post(f"{api}/classify", json=body, timeout=120)

    y = 2024
    many = [{**good[0], "class": f"c{i % 40}"} for i in range(5_001)]
    markup = [{**lab, "class": "<b>x</b>"} for lab in good[:2]]
    off = {"lon": 10.0, "lat": 10.0, "class": "Cropland"}
    nope = [{"name": "Nope", "color": "#000000"}]
    cases: list[tuple[Any, int, str]] = [
        ({"year": y, "labels": [{**lab, "class": "Cropland"} for lab in good]}, 400, "one class"),
        ({"year": y, "labels": many}, 413, "CLASSIFY_MAX_LABELS"),
        ({"year": y, "labels": markup + good}, 400, "class name"),
        ({"year": y, "labels": [{**good[0], "lat": 95.0}, *good]}, 400, "lat"),
        ({"year": y, "labels": [off, *good]}, 422, "no valid embedding"),
        ({"year": 2019, "labels": good}, 422, "no valid embedding"),
        ({"year": y, "labels": good, "classes": nope}, 400, "without labels"),
        ({"year": y, "labels": good, "kind": "forest"}, 400, "kind"),
    ]
    for body, status, needle in cases:
        got = post(body)
        assert got.status_code == status and needle in got.text, (needle, got.text[:500])
    # NaN coordinates (not JSON, but Python's json writes them)
    raw = json.dumps({"year": 2024, "labels": [{**good[0], "lon": float("nan")}, *good]})
    got = httpx.post(
        f"{api}/classify", content=raw, headers={"content-type": "application/json"}, timeout=60
    )
    assert got.status_code in (400, 422), got.text[:300]
    # dropping labels without a value is allowed when asked
    off = {**off, "class": good[0]["class"]}
    ok = post({"year": 2024, "labels": [off, *good], "drop_invalid": True})
    assert ok.status_code == 201 and ok.json()["report"]["dropped"] == [0], ok.text[:500]


# --------------------------------------------------------------------- watershed routes
def test_watershed_classes_routes(api: str, class_root: dict[str, Any]) -> None:
    first = class_root["written"][0]
    table = pd.read_parquet(first.parquet)
    row = table[table["classified_in_ha"] > 500].iloc[0]
    uid = str(row["uid"])
    one = httpx.get(
        f"{api}/watersheds/{uid}/classes", params={"model": TEST_MODEL, "year": 2024}, timeout=60
    )
    assert one.status_code == 200, one.text
    data = one.json()
    assert data["item"] == first.item_id and data["flag"] == row["flag"]
    got = {c["name"]: c for c in data["classes"]}
    assert got["Tree-cover"]["tree_cover_in_ha"] == pytest.approx(row["tree_cover_in_ha"])
    assert sum(
        c[f"{k}_percent"]
        for c, k in zip(data["classes"], ["cropland", "tree_cover", "built_up"], strict=True)
    ) == pytest.approx(100)
    series = httpx.get(
        f"{api}/watersheds/{uid}/classes", params={"model": TEST_MODEL}, timeout=60
    ).json()
    assert series["annual"]["time"] == list(CLASS_YEARS)
    assert series["annual_units"]["cropland_in_ha"] == "ha"
    second = pd.read_parquet(class_root["written"][1].parquet).set_index("uid")
    assert series["annual"]["cropland_in_ha"] == pytest.approx(
        [row["cropland_in_ha"], second.loc[uid, "cropland_in_ha"]]
    )
    rank = httpx.get(
        f"{api}/watersheds/classes",
        params={"model": TEST_MODEL, "class": "tree_cover", "year": 2024, "limit": 5},
        timeout=60,
    )
    assert rank.status_code == 200, rank.text
    ranked = rank.json()["results"]
    best = table[table["classified_in_ha"] > 0].sort_values(
        ["tree_cover_percent", "uid"], ascending=[False, True]
    )
    assert [r["uid"] for r in ranked] == list(best["uid"][:5])
    assert ranked[0]["tree_cover_percent"] == pytest.approx(best["tree_cover_percent"].iloc[0])
    by_ha = httpx.get(
        f"{api}/watersheds/classes",
        params={"model": TEST_MODEL, "class": "Built-up", "year": 2025, "by": "ha", "order": "asc"},
        timeout=60,
    ).json()["results"]
    assert [r["built_up_in_ha"] for r in by_ha] == sorted(r["built_up_in_ha"] for r in by_ha)
    # the class item's web-map-links and the tables are STAC items in pgSTAC
    assert (
        httpx.get(f"{api}/collections/{MWS_CLASSES}/items/{first.item_id}", timeout=60).status_code
        == 200
    )


M = TEST_MODEL
WATERSHED_ERRORS: list[tuple[str, dict[str, Any], int, str]] = [
    ("/watersheds/classes", {"model": "../x", "class": "a", "year": 2024}, 400, "model name"),
    ("/watersheds/classes", {"model": "nope", "class": "a", "year": 2024}, 404, "no per-MWS"),
    ("/watersheds/classes", {"model": M, "class": "Lava", "year": 2024}, 404, "no class 'Lava'"),
    ("/watersheds/classes", {"model": M, "class": "Lava", "year": 1800}, 400, "year"),
    ("/watersheds/classes", {"model": M, "class": "x", "year": 2024, "limit": 0}, 400, "limit"),
    ("/watersheds/nope/classes", {"model": M, "year": 2024}, 404, "no MWS with uid"),
    ("/watersheds/nope/classes", {"model": M, "year": 2030}, 404, "loaded for 2030"),
]


def test_watershed_classes_errors(api: str) -> None:
    for path, params, status, needle in WATERSHED_ERRORS:
        got = httpx.get(f"{api}{path}", params=params, timeout=60)
        assert got.status_code == status and needle in got.text, (path, params, got.text[:500])


# ------------------------------------------------------------------ STAC Browser, looked at
def colour_shares(screenshot: str, colours: list[str], tolerance: int = 40) -> list[float]:
    """Share of the picture's pixels within ``tolerance`` (per channel) of each colour."""
    from PIL import Image

    rgb = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    return [
        float((np.abs(rgb - np.array(rgba(c))).max(axis=-1) <= tolerance).mean()) for c in colours
    ]


@pytest.mark.slow
def test_stac_browser_draws_class_maps_in_class_colours(
    pg_dsn: str,
    live_api: LiveApi,
    class_root: dict[str, Any],
    stac_browser_build: Path,
    chromium: str,
    playwright_installed: Path,
    tmp_path: Path,
) -> None:
    """Headless Chromium on STAC Browser: the class collection's map (the class mosaic) and a
    class item's map show the classes in their colours (every class present, pixel-checked)."""
    import os
    import subprocess

    from tests.fixtures_demo import BROWSER_DIR

    root = class_root["root"]
    url = live_api(create_app(ApiSettings(data_dir=root, browser_dir=stac_browser_build), pg_dsn))
    load(pg_dsn, str(root / "catalog.json"), base_url=url + "/data")
    cid, iid = f"tessera-classes-{TEST_MODEL}", f"{CELL.name}_2024"
    out = tmp_path / "browser"
    result = subprocess.run(
        ["node", str(BROWSER_DIR / "e2e.cjs"), "--base", url, "--collection", cid,
         "--item", iid, "--asset-text", "classes", "--out", str(out), "--thumbnails", "no"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TESSERA_STAC_CHROMIUM": chromium},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(
        {
            page: {k: v for k, v in got.items() if k.endswith("_ms")}
            for page, got in report["pages"].items()
        }
    )
    colours = [c["color"] for c in TEST_CLASSES]
    for page in ("collection", "item"):
        shot = report["pages"][page]["map_screenshot"]
        tiles = [t for t in report["pages"][page]["tiles"] if "/tiles/collections/" in t]
        assert tiles and all("assets=classes" in t for t in tiles), report["pages"][page]
        shares = colour_shares(shot, colours)
        print(page, dict(zip(colours, shares, strict=True)), shot)
        assert all(share >= 0.005 for share in shares), (page, shares, shot)
    assert not [r for r in report["failed_requests"] if r.startswith("5")], report


def test_hectares_per_class_are_served_as_features(api: str, class_root: dict[str, Any]) -> None:
    """``load`` puts the one-year class tables into ``tessera_features.mws_classes`` (one row
    per watershed and class); OGC API Features serves them with CQL2 filters, and the numbers
    equal the published GeoParquet."""
    import geopandas as gpd

    from tessera_stac.api.features import collection_id
    from tessera_stac.catalog.constants import MWS_CLASSES_TABLE

    one_year = [w for w in class_root["written"] if w.annual is None and "2024" in w.item_id]
    assert one_year, class_root["written"]
    table = gpd.read_parquet(one_year[0].parquet)
    cls = TEST_CLASSES[0]
    column = next(c for c in table.columns if c.endswith("_in_ha") and "crop" in c.lower())
    uid = str(table.sort_values(column).iloc[-1]["uid"])
    url = f"{api}/features/collections/{collection_id(MWS_CLASSES_TABLE)}/items"
    got = httpx.get(
        url,
        params={
            "filter": f"uid = '{uid}' AND class = '{cls['name']}' AND year = 2024",
            "limit": 10,
        },
        timeout=60,
    )
    assert got.status_code == 200, got.text[:500]
    features = got.json()["features"]
    assert len(features) == 1, features
    props = features[0]["properties"]
    row = table.set_index(table["uid"].astype(str)).loc[uid]
    assert props["in_ha"] == pytest.approx(float(row[column]))
    assert props["percent"] == pytest.approx(float(row[column.replace("_in_ha", "_percent")]))
    assert props["class_colour"] == cls["color"] and props["model"] == TEST_MODEL
    # every watershed has one row per class
    count = httpx.get(url, params={"filter": "year = 2024", "limit": 1}, timeout=60).json()
    assert count["numberMatched"] == len(table) * len(TEST_CLASSES)

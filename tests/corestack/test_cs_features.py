"""Watersheds on the map: the MWS layer, joins and change loaded as PostGIS tables beside
pgSTAC, served by tipg under /features (OGC API Features, vector tiles), read by GDAL's OAPIF
driver (what QGIS uses) and a vector-tile decoder, and found from STAC alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import numpy as np
import psycopg
import pytest
import shapely

from tessera_stac.api.app import create_app
from tessera_stac.api.features import collection_id
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.constants import MVT_MEDIA_TYPE
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.pca import hex_colours, pca_colours
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_corestack import YEARS

pytestmark = pytest.mark.slow
MWS = collection_id("mws")
JOIN = collection_id("mws_embeddings")
CHANGE = collection_id("mws_change")


def _parquet(root: Path, collection: str, item_id: str) -> gpd.GeoDataFrame:
    return gpd.read_parquet(root / collection / item_id / f"{item_id}.parquet")


@pytest.fixture(scope="module")
def served(cli_catalog: tuple[Path, str], pg_cluster: Any) -> Iterator[dict[str, Any]]:
    """The CLI's catalog (MWS layer, joins 2023/2024, change) loaded with public /data hrefs,
    and the API serving it."""
    from tests.conftest import TEMPLATE_DB, LiveServer

    root, mws_id = cli_catalog
    with pg_cluster.template_clone(TEMPLATE_DB, f"t_feat_{uuid.uuid4().hex[:10]}") as dsn:
        server = LiveServer(create_app(ApiSettings(data_dir=root), dsn)).start()
        try:
            report = load(dsn, str(root / "catalog.json"), base_url=server.url + "/data")
            yield {"url": server.url, "dsn": dsn, "root": root, "mws": mws_id, "report": report}
        finally:
            server.stop()


def _rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def _snapshot(dsn: str) -> list[Any]:
    return [
        _rows(dsn, f"SELECT md5(string_agg(t::text, ',' ORDER BY id)), count(*) FROM {name} t")
        for name in (MWS, JOIN, CHANGE, "tessera_features.mws_vectors")
    ]


def test_load_writes_feature_tables_from_the_published_tables(served: dict[str, Any]) -> None:
    root, mws_id, dsn = served["root"], served["mws"], served["dsn"]
    layer = _parquet(root, "corestack-mws", mws_id)
    assert served["report"].features["mws"] == len(layer)
    rows = _rows(dsn, f"SELECT uid, item, state, block, ST_AsBinary(geom) FROM {MWS} ORDER BY uid")
    assert [r[0] for r in rows] == sorted(layer["uid"])
    assert {r[1] for r in rows} == {mws_id} and {r[2] for r in rows} == {"gujarat"}
    by_uid = layer.set_index("uid").geometry
    assert all(shapely.from_wkb(bytes(r[4])).equals_exact(by_uid[r[0]], 0) for r in rows)
    for year in YEARS:
        join_id = f"{mws_id}_embeddings_{year}"
        table = _parquet(root, "corestack-mws-embeddings", join_id)
        means = table[[f"A{i:02d}" for i in range(128)]].to_numpy(np.float32)
        want = dict(zip(table["uid"], hex_colours(pca_colours(means)), strict=True))
        got = _rows(dsn, f"SELECT uid, pca_colour, count FROM {JOIN} WHERE year = {year}")
        assert {u: c for u, c, _ in got} == want and len(got) == len(table)
        assert len({c for c in want.values() if c}) > 10  # the colours differ between MWS
        vectors = dict(
            _rows(
                dsn,
                f"SELECT uid, mean FROM tessera_features.mws_vectors WHERE item = '{join_id}'",
            )
        )
        ok = table[table["count"] > 0].iloc[0]
        assert np.array_equal(
            np.float32(vectors[ok["uid"]]), ok[[f"A{i:02d}" for i in range(128)]].to_numpy("f4")
        )
    change = _parquet(root, "corestack-mws-change", f"{mws_id}_change_2023_2024")
    got = dict(_rows(dsn, f"SELECT uid, distance FROM {CHANGE}"))
    covered = change[change["pixels"] > 0]
    assert len(got) == len(change)
    np.testing.assert_array_equal([got[u] for u in covered["uid"]], covered["distance"])


def test_reload_is_idempotent_and_a_failing_load_writes_nothing(
    served: dict[str, Any], tmp_path: Path
) -> None:
    dsn, root = served["dsn"], served["root"]
    before = _snapshot(dsn)
    load(dsn, str(root / "catalog.json"), base_url=served["url"] + "/data")
    assert _snapshot(dsn) == before
    # a copy whose change table is broken: the load fails, naming it; nothing changed
    broken = tmp_path / "cat"
    shutil.copytree(root, broken, ignore=shutil.ignore_patterns("*.tif"))
    name = f"{served['mws']}_change_2023_2024"
    (broken / "corestack-mws-change" / name / f"{name}.parquet").write_bytes(b"PAR1 nope")
    items = _rows(dsn, "SELECT count(*), md5(string_agg(id, ',' ORDER BY id)) FROM pgstac.items")
    with pytest.raises(InputError, match=name):
        load(dsn, str(broken / "catalog.json"))
    assert _snapshot(dsn) == before
    assert (
        _rows(dsn, "SELECT count(*), md5(string_agg(id, ',' ORDER BY id)) FROM pgstac.items")
        == items
    )


_OGR_SCRIPT = """
import json, sys
import pyogrio
source, layer, where = sys.argv[1], sys.argv[2], sys.argv[3] or None
if layer == "-":
    print(json.dumps([name for name, _ in pyogrio.list_layers(source)]))
else:
    frame = pyogrio.read_dataframe(source, layer=layer, where=where)
    frame["wkb"] = frame.geometry.to_wkb(hex=True)
    print(frame.drop(columns="geometry").to_json(orient="records"))
"""


def _ogr(source: str, layer: str = "-", where: str = "") -> Any:
    """GDAL's OAPIF driver (pyogrio's bundled GDAL) in a child process: GDAL holds the GIL
    while it downloads, and the server runs in this process."""
    done = subprocess.run(
        [sys.executable, "-c", _OGR_SCRIPT, source, layer, where],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_gdal_oapif_driver_reads_every_watershed(served: dict[str, Any]) -> None:
    url, root, mws_id = served["url"], served["root"], served["mws"]
    source = f"OAPIF:{url}/features"
    layers = set(_ogr(source))
    assert {MWS, JOIN, CHANGE} <= layers
    assert not any(name.startswith("pgstac") for name in layers)  # only our schema
    published = _parquet(root, "corestack-mws", mws_id).set_index("uid")
    got = _ogr(source, MWS)
    assert len(got) == len(published)
    assert {"uid", "item", "state", "district", "block"} <= set(got[0])
    assert {r["uid"] for r in got} == set(published.index)
    assert {r["block"] for r in got} == {"bhavnagar"}
    for row in got:
        geom, want = shapely.from_wkb(row["wkb"]), published.geometry[row["uid"]]
        assert shapely.get_num_coordinates(geom) == shapely.get_num_coordinates(want)
        assert shapely.equals_exact(shapely.normalize(geom), shapely.normalize(want), 1e-9)
    uid = str(published.index[5])
    one = _ogr(source, MWS, f"uid = '{uid}'")
    assert [r["uid"] for r in one] == [uid]
    joined = _ogr(source, JOIN, "year = 2024")
    assert len(joined) == len(published)
    assert sum(1 for r in joined if r["pca_colour"]) > 10


def test_cql2_filters_and_bounded_pages(served: dict[str, Any]) -> None:
    url, root, mws_id = served["url"], served["root"], served["mws"]
    items = f"{url}/features/collections/{MWS}/items"
    uid = str(_parquet(root, "corestack-mws", mws_id)["uid"].iloc[3])
    got = httpx.get(items, params={"filter": f"uid='{uid}'", "filter-lang": "cql2-text"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["numberMatched"] == 1 and body["features"][0]["properties"]["uid"] == uid
    # the watersheds of this block that changed most (the demo's request)
    change = _parquet(root, "corestack-mws-change", f"{mws_id}_change_2023_2024")
    top = change.sort_values("distance", ascending=False).head(3)
    ranked = httpx.get(
        f"{url}/features/collections/{CHANGE}/items",
        params={
            "filter": "block='bhavnagar' AND year_to=2024 AND distance > 0.01",
            "sortby": "-distance",
            "limit": 3,
        },
    ).json()
    assert [f["properties"]["uid"] for f in ranked["features"]] == list(top["uid"])
    # limit capped by max_limit (bounds middleware) on a second API with a small cap
    app = create_app(ApiSettings(max_limit=5), served["dsn"])
    from tests.conftest import LiveServer

    small = LiveServer(app).start()
    try:
        page = httpx.get(f"{small.url}/features/collections/{MWS}/items", params={"limit": 500})
        assert page.status_code == 200 and len(page.json()["features"]) == 5
        assert any(ln["rel"] == "next" for ln in page.json()["links"])
        deep = httpx.get(f"{small.url}/features/collections/{MWS}/items", params={
            "filter": "(" * 40 + "uid='x'" + ")" * 40})  # fmt: skip
        assert deep.status_code == 400
    finally:
        small.stop()


def test_features_answer_503_while_the_database_is_down() -> None:
    from tessera_stac.catalog.pgstac.cluster import free_port
    from tests.conftest import LiveServer

    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    server = LiveServer(create_app(ApiSettings(db_connect_timeout=1.0), dsn)).start()
    try:
        for path in ("/features/collections", f"/features/collections/{MWS}/items"):
            got = httpx.get(f"{server.url}{path}", timeout=30)
            assert got.status_code == 503, (path, got.status_code, got.text[:300])
            assert got.json()["code"] == "DatabaseUnavailable" and "Retry-After" in got.headers
    finally:
        server.stop()


def _tile_of(lon: float, lat: float, zoom: int) -> Any:
    import morecantile

    return morecantile.tms.get("WebMercatorQuad").tile(lon, lat, zoom)


def test_vector_tile_holds_the_watersheds_with_their_indicators(served: dict[str, Any]) -> None:
    import mapbox_vector_tile
    import morecantile

    url, root, mws_id = served["url"], served["root"], served["mws"]
    table = _parquet(root, "corestack-mws-embeddings", f"{mws_id}_embeddings_2024")
    centre = table.geometry.union_all().centroid
    tile = _tile_of(centre.x, centre.y, 11)
    got = httpx.get(
        f"{url}/features/collections/{JOIN}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}",
        params={"filter": "year=2024"},
        timeout=60,
    )
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == MVT_MEDIA_TYPE
    decoded = mapbox_vector_tile.decode(got.content)
    features = [f for layer in decoded.values() for f in layer["features"]]
    bounds = morecantile.tms.get("WebMercatorQuad").bounds(tile)
    touching = table[table.intersects(shapely.box(*bounds))]
    assert len(touching) > 10
    assert {f["properties"]["uid"] for f in features} == set(touching["uid"])
    colours = dict(zip(table["uid"], hex_colours(pca_colours(
        table[[f"A{i:02d}" for i in range(128)]].to_numpy(np.float32))), strict=True))  # fmt: skip
    for f in features:
        props = f["properties"]
        assert props["year"] == 2024 and props.get("pca_colour") == colours[props["uid"]]
        assert {"count", "pixels", "flag", "block"} <= set(props)


def test_stac_items_link_to_their_features_and_tiles(served: dict[str, Any]) -> None:
    url, mws_id = served["url"], served["mws"]
    cases = {
        ("corestack-mws", mws_id): MWS,
        ("corestack-mws-embeddings", f"{mws_id}_embeddings_2024"): JOIN,
        ("corestack-mws-change", f"{mws_id}_change_2023_2024"): CHANGE,
    }
    for (collection, item_id), table in cases.items():
        item = httpx.get(f"{url}/collections/{collection}/items/{item_id}").json()
        geojson = [
            ln for ln in item["links"] if ln.get("type") == "application/geo+json"
            and "/features/" in ln["href"]
        ]  # fmt: skip
        assert len(geojson) == 1 and f"/features/collections/{table}/items" in geojson[0]["href"]
        page = httpx.get(geojson[0]["href"]).json()
        assert page["numberMatched"] == item["properties"]["table:row_count"]
        assert {f["properties"]["item"] for f in page["features"]} == {item_id}
        tiles = [ln for ln in item["links"] if ln.get("type") == MVT_MEDIA_TYPE]
        # not a web-map-link: STAC Browser would draw it as an image over the item's map
        assert len(tiles) == 1 and tiles[0]["rel"] not in ("xyz", "tilejson")
        lon = (item["bbox"][0] + item["bbox"][2]) / 2
        lat = (item["bbox"][1] + item["bbox"][3]) / 2
        t = _tile_of(lon, lat, 12)
        href = tiles[0]["href"].replace("{z}", str(t.z)).replace("{x}", str(t.x))
        got = httpx.get(href.replace("{y}", str(t.y)))
        assert got.status_code == 200 and got.headers["content-type"] == MVT_MEDIA_TYPE
        assert len(got.content) > 100
        coll = httpx.get(f"{url}/collections/{collection}").json()
        assert any(
            ln["rel"] == "related" and ln["href"].endswith(f"/features/collections/{table}")
            for ln in coll["links"]
        )


# ------------------------------------------------------------------ tile layers
EMB = "tessera-embeddings-v1"
VECTORS = [("assets", "embeddings"), ("assets", "scales")]


def _npy(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
    """(data bands, valid mask) of a ``.npy`` tile (titiler appends the mask band)."""
    import io

    assert response.status_code == 200, response.text[:2000]
    arr = np.load(io.BytesIO(response.content))
    return arr[:-1], arr[-1] > 0


def test_similarity_by_uid_equals_similarity_to_its_mean_vector(served: dict[str, Any]) -> None:
    url, root, mws_id = served["url"], served["root"], served["mws"]
    table = _parquet(root, "corestack-mws-embeddings", f"{mws_id}_embeddings_2024")
    row = table[table["count"] > 0].iloc[0]
    vector = [float(v) for v in row[[f"A{i:02d}" for i in range(128)]].to_numpy("f4")]
    centre = row.geometry.centroid
    t = _tile_of(centre.x, centre.y, 13)
    base = f"{url}/tiles/collections/{EMB}/years/2024/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.npy"

    def layer(params: dict[str, Any]) -> httpx.Response:
        query = [*VECTORS, ("algorithm", "similarity"), ("algorithm_params", json.dumps(params))]
        return httpx.get(base, params=query, timeout=120)

    by_uid, by_uid_ok = _npy(layer({"uid": row["uid"]}))
    by_vector, by_vector_ok = _npy(layer({"vector": vector}))
    assert by_uid_ok.sum() > 1000 and np.array_equal(by_uid_ok, by_vector_ok)
    assert np.array_equal(by_uid[0][by_uid_ok], by_vector[0][by_uid_ok])
    # its own pixels are like it, not all pixels are (the layer has teeth)
    assert 0.5 < float(np.nanmax(by_uid[0][by_uid_ok])) <= 1.0
    assert float(np.nanmin(by_uid[0][by_uid_ok])) < 0.9
    assert layer({"uid": "nope"}).status_code == 404
    empty = table[table["count"] == 0]
    if len(empty):
        assert layer({"uid": empty["uid"].iloc[0]}).status_code == 404
    assert layer({"uid": row["uid"], "year": 2019}).status_code == 404


def test_change_tiles_equal_the_change_cogs(served: dict[str, Any], tmp_path: Path) -> None:
    from rio_tiler.io import Reader

    from tessera_stac.cli.main import main
    from tests.fixtures_corestack import GRIDS

    url = served["url"]
    out = tmp_path / "changes"
    args = ["change-map", str(out), "--from", "2023", "--to", "2024", "--tiles"]
    assert main([*args, str(served["root"]), "--bbox", "71.9,21.8,72.1,21.9"]) == 0
    params = [*VECTORS, ("algorithm", "change"), ("algorithm_params", '{"year": 2023}')]
    for grid in GRIDS:
        lon, lat = (float(v) for v in grid.split("_")[1:])
        t = _tile_of(lon, lat, 14)  # a tile well inside the cell
        cog = next(out.glob(f"{grid}_2023*.tif"))
        with Reader(str(cog)) as src:
            want = src.tile(t.x, t.y, t.z)
        want_values = np.ma.getdata(want.array)[0]
        want_ok = ~np.ma.getmaskarray(want.array)[0] & np.isfinite(want_values)
        tail = f"tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.npy"
        for root in (f"items/{grid}_2024", "years/2024"):
            got, ok = _npy(
                httpx.get(
                    f"{url}/tiles/collections/{EMB}/{root}/{tail}", params=params, timeout=120
                )
            )
            assert ok.sum() > 10_000 and np.array_equal(ok, want_ok), root
            np.testing.assert_allclose(got[0][ok], want_values[ok], rtol=0, atol=1e-6)
        assert float(want_values[want_ok].max()) > 0.01  # some change
    same = httpx.get(
        f"{url}/tiles/collections/{EMB}/years/2024/tiles/WebMercatorQuad/14/0/0.npy",
        params=[*VECTORS, ("algorithm", "change"), ("algorithm_params", '{"year": 2024}')],
    )
    assert same.status_code == 400
    wide = httpx.get(
        f"{url}/tiles/collections/{EMB}/years/2024/tiles/WebMercatorQuad/5/22/14.npy",
        params=params,
        timeout=60,
    )
    assert wide.status_code == 413 and "zoom in" in wide.text

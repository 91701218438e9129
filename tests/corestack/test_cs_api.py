"""CoRE Stack through pgSTAC and the API: MWS vector/similarity routes, imported catalogs."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import numpy as np
import pandas as pd
import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.pgstac.load import load
from tessera_stac.publisher.join.join import MEAN_COLUMNS, JoinResult, write_join
from tessera_stac.publisher.watersheds.corestack import read_corestack_catalog, write_import
from tessera_stac.publisher.watersheds.layer import BlockName, publish_mws_layer

YEAR = 2024
NOW = datetime(2025, 3, 1, tzinfo=UTC)
REAL_ITEM = "gujarat_bhavnagar_bhavnagar_mws_embeddings_2024"
OTHER_ITEM = "gujarat_bhavnagar_other_mws_embeddings_2024"


def _other_block(result: JoinResult) -> JoinResult:
    """A second block: same shapes shifted in uid, vectors perturbed; one uid kept (shared)."""
    table = result.table.copy()
    rng = np.random.default_rng(7)
    keep = table["uid"] == "14_51019"
    table.loc[~keep, "uid"] = "99_" + table.loc[~keep, "uid"]
    noise = rng.normal(scale=0.01, size=(len(table), 128)).astype(np.float32)
    table[list(MEAN_COLUMNS)] = table[list(MEAN_COLUMNS)].to_numpy() + noise
    return dataclasses.replace(result, table=table)


@pytest.fixture(scope="module")
def served(
    bhavnagar_join: Any, bhavnagar_geojson: Path, tmp_path_factory: Any, pg_cluster: Any
) -> Iterator[tuple[str, Path]]:
    """One database and API for the module: the real join plus a second, perturbed block."""
    from tests.conftest import TEMPLATE_DB, LiveServer

    _layer, _tiles, result = bhavnagar_join
    out = tmp_path_factory.mktemp("api-cat")
    pub = publish_mws_layer(
        bhavnagar_geojson, BlockName("Gujarat", "Bhavnagar", "Bhavnagar"), out, now=NOW
    )
    mws_item = json.loads(pub.item_path.read_text())
    write_join(result, out, mws_item, str(pub.item_path), NOW)
    other = {"id": "gujarat_bhavnagar_other_mws", "properties": {}}
    write_join(_other_block(result), out, other, str(bhavnagar_geojson), NOW)
    with pg_cluster.template_clone(TEMPLATE_DB, f"t_cs_{uuid.uuid4().hex[:10]}") as dsn:
        load(dsn, str(out / "catalog.json"))
        server = LiveServer(create_app(ApiSettings(), dsn)).start()
        try:
            yield server.url, out
        finally:
            server.stop()


def _table(out: Path, item_id: str) -> gpd.GeoDataFrame:
    return gpd.read_parquet(out / "corestack-mws-embeddings" / item_id / f"{item_id}.parquet")


def test_mean_vector_by_uid_and_year(served: tuple[str, Path]) -> None:
    url, out = served
    table = _table(out, REAL_ITEM).set_index("uid")
    uid = table[table["flag"] == "ok"].index[0]
    got = httpx.get(f"{url}/watersheds/{uid}/embedding", params={"year": YEAR}, timeout=30)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["item"] == REAL_ITEM and body["count"] == int(table.loc[uid, "count"])
    assert len(body["vector"]) == 128
    assert np.array_equal(
        np.float32(body["vector"]), table.loc[uid, list(MEAN_COLUMNS)].to_numpy(np.float32)
    )
    assert body["links"][0]["href"].endswith(
        f"/collections/corestack-mws-embeddings/items/{REAL_ITEM}"
    )
    assert httpx.get(body["links"][0]["href"], timeout=30).status_code == 200

    empty = table[table["count"] == 0].index[0]
    body = httpx.get(f"{url}/watersheds/{empty}/embedding", params={"year": YEAR}).json()
    assert body["vector"] is None and body["flag"] == "no_valid_pixels" and body["count"] == 0

    assert httpx.get(f"{url}/watersheds/nope/embedding", params={"year": YEAR}).status_code == 404
    missing_year = httpx.get(f"{url}/watersheds/{uid}/embedding", params={"year": 2019})
    assert missing_year.status_code == 404 and "2019" in missing_year.json()["description"]
    shared = httpx.get(f"{url}/watersheds/14_51019/embedding", params={"year": YEAR})
    assert shared.status_code == 409
    one = httpx.get(
        f"{url}/watersheds/14_51019/embedding", params={"year": YEAR, "item": OTHER_ITEM}
    )
    assert one.status_code == 200 and one.json()["item"] == OTHER_ITEM


def _numpy_top(query: np.ndarray, frame: Any, exclude: tuple[str, str], k: int) -> list[Any]:
    rows = frame[
        (frame["count"] > 0) & ~((frame["uid"] == exclude[0]) & (frame["item"] == exclude[1]))
    ]
    m = rows[list(MEAN_COLUMNS)].to_numpy(np.float64)
    sims = m @ query / (np.linalg.norm(m, axis=1) * np.linalg.norm(query))
    order = np.argsort(-sims, kind="stable")[:k]
    return [(rows["item"].iloc[i], rows["uid"].iloc[i], sims[i]) for i in order]


@pytest.mark.parametrize("scope", ["block", "all"])
def test_k_most_similar_matches_numpy(served: tuple[str, Path], scope: str) -> None:
    url, out = served
    real = _table(out, REAL_ITEM).assign(item=REAL_ITEM)
    other = _table(out, OTHER_ITEM).assign(item=OTHER_ITEM)
    uid = real[real["flag"] == "ok"]["uid"].iloc[3]
    query = real.set_index("uid").loc[uid, list(MEAN_COLUMNS)].to_numpy(np.float64)
    pool = real if scope == "block" else pd.concat([real, other], ignore_index=True)
    want = _numpy_top(query, pool, (uid, REAL_ITEM), 7)
    got = httpx.get(
        f"{url}/watersheds/{uid}/similar",
        params={"year": YEAR, "k": 7, "scope": scope},
        timeout=30,
    )
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert [(r["item"], r["uid"]) for r in results] == [(w[0], w[1]) for w in want]
    np.testing.assert_allclose([r["similarity"] for r in results], [w[2] for w in want], atol=1e-9)
    if scope == "all":  # the perturbed copy of the same MWS in the other block is the nearest
        assert results[0]["item"] == OTHER_ITEM and results[0]["uid"] == f"99_{uid}"
    else:
        assert {r["item"] for r in results} == {REAL_ITEM}


@pytest.mark.slow  # the whole real CoRE Stack sample (22 MB of block geometries) loaded and served
def test_imported_corestack_catalog_is_served_next_to_embeddings(
    corestack_sample: Path, tmp_path: Path, pg_dsn: str, live_api: Any, bhavnagar_geojson: Path
) -> None:
    from tests.fixtures_api import make_item, write_catalog

    result = write_import(read_corestack_catalog(corestack_sample), tmp_path / "cat")
    for path in result.written:
        load(pg_dsn, str(path))
    # an embedding tile and the Bhavnagar MWS layer, for the side-by-side search
    write_catalog(tmp_path / "emb", [make_item(72.05, 21.85, YEAR)], "tessera-embeddings-test")
    load(pg_dsn, str(tmp_path / "emb" / "catalog.json"))
    pub = publish_mws_layer(
        bhavnagar_geojson, BlockName("Gujarat", "Bhavnagar", "Bhavnagar"), tmp_path / "mws", now=NOW
    )
    load(pg_dsn, str(pub.collection_path))
    url = live_api(create_app(ApiSettings(), pg_dsn))
    with httpx.Client(base_url=url, timeout=60) as client:
        for item in result.items:
            got = client.get(f"/collections/{item['collection']}/items/{item['id']}")
            assert got.status_code == 200, (item["id"], got.text)
            body = got.json()
            assert body["properties"]["title"] == item["properties"]["title"]
            assert set(body["assets"]) == set(item["assets"])
            assert body["assets"]["data"]["href"] == item["assets"]["data"]["href"]
        ids = {c["id"] for c in client.get("/collections").json()["collections"]}
        assert {c["id"] for c in result.collections} <= ids
        found = client.post("/search", json={"bbox": [71.9, 21.7, 72.1, 21.9], "limit": 50})
        assert found.status_code == 200
        got_ids = {f["id"] for f in found.json()["features"]}
        assert {"grid_72.05_21.85_2024", "gujarat_bhavnagar_bhavnagar_mws"} <= got_ids
        koraput = client.post("/search", json={"bbox": [82.8, 18.8, 82.9, 18.9], "limit": 50})
        assert len(koraput.json()["features"]) == 15


@pytest.mark.slow  # a join over HTTP range reads in a child process
def test_join_finds_tiles_through_the_api_and_reads_cogs_over_http(
    published_sample: Any, bhavnagar_join: Any, pg_dsn: str, live_api: Any, tmp_path: Path
) -> None:
    """Tiles found by a STAC search, COGs read by GDAL over HTTP range requests (/data)."""
    from tessera_stac.publisher.join.join import find_tiles_api
    from tests.fixtures_api import make_collection

    layer, _tiles, result = bhavnagar_join
    url = live_api(create_app(ApiSettings(data_dir=published_sample.dest), pg_dsn))
    objs: list[dict[str, Any]] = [make_collection(published_sample.collection)]
    for path in published_sample.items:
        item = json.loads(path.read_text())
        rel = path.parent.relative_to(published_sample.dest).as_posix()
        for asset in item["assets"].values():
            asset["href"] = f"{url}/data/{rel}/{asset['href'].removeprefix('./')}"
        item["links"] = []
        objs.append(item)
    ndjson = tmp_path / "tiles.ndjson"
    ndjson.write_text("".join(json.dumps(o) + "\n" for o in objs))
    load(pg_dsn, str(ndjson))

    # the join runs in a child process: GDAL holds the GIL while it opens a /vsicurl/ file, so
    # it must not share a process with the (thread-based) test server it reads from
    import subprocess
    import sys

    import geopandas as gpd

    table = result.table
    few = table[table["flag"] != "no_valid_pixels"]["uid"].iloc[:3].tolist()
    src = tmp_path / "few.geojson"
    layer.frame[layer.frame["uid"].isin(few)].to_file(src, driver="GeoJSON")
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "watersheds", "join", str(src)]
    run = subprocess.run(
        [*cli, "--year", str(YEAR), "--stac-url", url, "-o", str(tmp_path / "o"), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["tiles_read"] == 2
    item = json.loads(Path(data["item"]).read_text())
    derived = [ln["href"] for ln in item["links"] if ln["rel"] == "derived_from"]
    # the layer file lies outside the catalog: named in a property, never linked by its path
    assert all(h.startswith(f"{url}/collections/") for h in derived) and len(derived) == 2
    assert item["properties"]["corestack:mws_source"] == "few"
    over_http = gpd.read_parquet(data["parquet"]).set_index("uid")
    local = table.set_index("uid").loc[over_http.index]
    assert sorted(over_http.index) == sorted(few)
    np.testing.assert_array_equal(over_http["count"], local["count"])
    np.testing.assert_array_equal(over_http[list(MEAN_COLUMNS)], local[list(MEAN_COLUMNS)])
    assert find_tiles_api(url, 2019, layer.frame.total_bounds) == []
    tiles = find_tiles_api(url, YEAR, layer.frame.total_bounds)
    assert {t.item_id for t in tiles} == {p.stem for p in published_sample.items}
    assert all(t.embeddings_href.startswith(f"{url}/data/") for t in tiles)

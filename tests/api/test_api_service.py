"""The API over HTTP: landing page, conformance, CORS, errors, auth, schema, files with Range."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera_stac.api.app import create_app, embedding_schema
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.errors import ConfigurationError
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_api import HAND_COLLECTION, make_collection, make_item

LiveApi = Callable[[Any], str]


def _ndjson(path: Path, objs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


@pytest.fixture
def loaded(pg_dsn: str, tmp_path: Path) -> str:
    """A database with embedding, model, CoRE Stack and other collections (+ 2 items)."""
    objs: list[dict[str, Any]] = [
        make_collection("aaa-other"),
        make_collection("corestack-odisha"),
        make_collection("tessera-models"),
        make_collection("tessera-embeddings-v1"),
        make_item(71.93, 23.01, 2024, collection_id="tessera-embeddings-v1"),
        make_item(72.07, 23.01, 2024, collection_id="tessera-embeddings-v1"),
    ]
    load(pg_dsn, str(_ndjson(tmp_path / "seed.ndjson", objs)))
    return pg_dsn


def test_landing_conformance_and_collections(loaded: str, live_api: LiveApi) -> None:
    settings = ApiSettings(title="TESSERA test API", description="A description for people.")
    url = live_api(create_app(settings, loaded))
    landing = httpx.get(url + "/").json()
    assert landing["title"] == "TESSERA test API"
    assert landing["description"] == "A description for people."
    children = [link for link in landing["links"] if link["rel"] == "child"]
    assert [c["href"].rsplit("/", 1)[1] for c in children] == [
        "tessera-embeddings-v1",
        "tessera-models",
        "corestack-odisha",
        "aaa-other",
    ]
    assert all(c["title"] for c in children)
    for child in children:  # every link resolves
        assert httpx.get(child["href"]).status_code == 200
    conforms = set(httpx.get(url + "/conformance").json()["conformsTo"])
    for needle in [
        "core",
        "collections",
        "ogcapi-features",
        "item-search",
        "item-search#filter",
        "item-search#sort",
        "item-search#fields",
        "item-search#query",
    ]:
        assert any(c.endswith(needle) for c in conforms), needle
    assert set(conforms) == set(landing["conformsTo"])


def test_cors_for_browser_clients(loaded: str, live_api: LiveApi) -> None:
    url = live_api(create_app(ApiSettings(), loaded))
    origin = {"Origin": "https://browser.example"}
    pre = httpx.options(
        url + "/search",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] in ("*", origin["Origin"])
    got = httpx.get(url + "/collections", headers=origin)
    assert got.headers["access-control-allow-origin"] in ("*", origin["Origin"])
    assert "Content-Range" in got.headers["access-control-expose-headers"]


def test_errors_are_json_with_status(loaded: str, live_api: LiveApi) -> None:
    url = live_api(create_app(ApiSettings(), loaded))
    missing = httpx.get(url + "/collections/nope")
    assert missing.status_code == 404 and missing.json()["code"]
    item = httpx.get(url + f"/collections/{HAND_COLLECTION}/items/nope")
    assert item.status_code == 404 and "description" in item.json()
    bad = httpx.get(url + "/search", params={"bbox": "1,2,3"})
    assert bad.status_code == 400 and bad.json()["code"]
    unknown = httpx.get(url + "/no/such/route")
    assert unknown.status_code == 404 and unknown.json()["code"] == "NotFound"
    health = httpx.get(url + "/healthz").json()
    assert health["database"]["reachable"] is True and health["database"]["pgstac_version"]


def test_read_only_by_default_and_token_for_writes(loaded: str, live_api: LiveApi) -> None:
    read_only = live_api(create_app(ApiSettings(), loaded))
    new = make_collection("tessera-new")
    refused = httpx.post(read_only + "/collections", json=new)
    assert refused.status_code in (404, 405)
    assert httpx.get(read_only + "/collections/tessera-new").status_code == 404

    with pytest.raises(ConfigurationError):
        create_app(ApiSettings(enable_transactions=True), loaded)

    settings = ApiSettings(enable_transactions=True, write_token="s3cret")
    url = live_api(create_app(settings, loaded))
    assert httpx.post(url + "/collections", json=new).status_code == 401
    wrong = httpx.post(url + "/collections", json=new, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "Unauthorized"
    assert httpx.get(url + "/collections/tessera-new").status_code == 404
    auth = {"Authorization": "Bearer s3cret"}
    created = httpx.post(url + "/collections", json=new, headers=auth)
    assert created.status_code in (200, 201), created.text
    assert httpx.get(url + "/collections/tessera-new").status_code == 200
    item = make_item(72.5, 23.5, 2024, collection_id="tessera-new")
    assert httpx.post(url + "/collections/tessera-new/items", json=item).status_code == 401
    posted = httpx.post(url + "/collections/tessera-new/items", json=item, headers=auth)
    assert posted.status_code in (200, 201), posted.text
    # reads stay open, including POST /search
    found = httpx.post(url + "/search", json={"collections": ["tessera-new"]}).json()
    assert [f["id"] for f in found["features"]] == [item["id"]]
    gone = httpx.delete(url + f"/collections/tessera-new/items/{item['id']}")
    assert gone.status_code == 401


def test_extension_schema_at_its_identifier_path(loaded: str, live_api: LiveApi) -> None:
    url = live_api(create_app(ApiSettings(), loaded))
    schema_file, schema_path = embedding_schema()
    got = httpx.get(url + "/embedding/v1.0.0/schema.json")
    if schema_file.is_file():
        assert got.status_code == 200
        assert got.json() == json.loads(schema_file.read_text())
        assert httpx.get(url + schema_path).status_code == 200
    else:  # until the catalog area lands the schema: a clear JSON 404
        assert got.status_code == 404 and "schema" in got.json()["description"]


def test_files_with_http_range(loaded: str, live_api: LiveApi, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    payload = bytes(range(256)) * 40
    (data / "a" / "blob.tif").write_bytes(payload)
    (tmp_path / "secret.txt").write_text("no")
    url = live_api(create_app(ApiSettings(data_dir=data), loaded))
    whole = httpx.get(url + "/data/a/blob.tif")
    assert whole.status_code == 200 and whole.content == payload
    assert whole.headers["accept-ranges"] == "bytes"
    part = httpx.get(
        url + "/data/a/blob.tif", headers={"Range": "bytes=100-199", "Accept-Encoding": "br, gzip"}
    )
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(payload)}"
    assert "content-encoding" not in part.headers
    assert part.content == payload[100:200]
    tail = httpx.get(url + "/data/a/blob.tif", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == payload[-10:]
    head = httpx.head(url + "/data/a/blob.tif")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(payload)
    beyond = httpx.get(url + "/data/a/blob.tif", headers={"Range": f"bytes={len(payload) + 5}-"})
    assert beyond.status_code == 416
    assert httpx.get(url + "/data/../secret.txt").status_code == 404
    assert httpx.get(url + "/data/a/%2e%2e/%2e%2e/secret.txt").status_code == 404
    assert httpx.get(url + "/data/a/missing.tif").json()["code"] == "NotFound"


def test_gdal_reads_a_cog_through_the_range_route(
    loaded: str, live_api: LiveApi, tmp_path: Path
) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    data = tmp_path / "data"
    data.mkdir()
    array = np.arange(512 * 512, dtype="int16").reshape(1, 512, 512)
    profile = {
        "driver": "GTiff",
        "dtype": "int16",
        "count": 1,
        "width": 512,
        "height": 512,
        "crs": "EPSG:32643",
        "transform": from_origin(500000, 2600000, 10, 10),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(data / "t.tif", "w", **profile) as dst:
        dst.write(array)
    url = live_api(create_app(ApiSettings(data_dir=data), loaded))
    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_USE_HEAD": "NO"}
    with rasterio.Env(**env), rasterio.open(f"/vsicurl/{url}/data/t.tif") as src:
        assert src.crs.to_epsg() == 32643
        window = rasterio.windows.Window(300, 260, 20, 10)
        assert (src.read(1, window=window) == array[0, 260:270, 300:320]).all()

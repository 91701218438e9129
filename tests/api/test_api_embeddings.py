"""Embedding routes over HTTP: point (two UTM zones), batch, zonal statistics, errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from pyproj import Transformer

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_api import EMB_COLLECTION

LiveApi = Callable[[Any], str]


@pytest.fixture
def served(
    pg_dsn: str, live_api: LiveApi, cog_catalog: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The API serving the COG catalog from /data, items loaded with hrefs through it."""
    url = live_api(create_app(ApiSettings(data_dir=cog_catalog["root"]), pg_dsn))
    load(pg_dsn, str(cog_catalog["catalog"]), base_url=url + "/data")
    return url, cog_catalog


def expected_pixel(item: dict[str, Any], lon: float, lat: float) -> tuple[int, int]:
    a, _, c, _, e, f = item["properties"]["proj:transform"]
    x, y = Transformer.from_crs(
        "EPSG:4326", item["properties"]["proj:code"], always_xy=True
    ).transform(lon, lat)
    return math.floor((f - y) / -e), math.floor((x - c) / a)


def tile_for(cog: dict[str, Any], lon: float, lat: float) -> tuple[dict[str, Any], Any, Any]:
    cell = GridCell.containing(lon, lat)
    return next(t for t in cog["tiles"].values() if t[0]["properties"]["tessera:grid"] == cell.name)


@pytest.mark.parametrize("lon,lat", [(71.9713, 23.0342), (72.0321, 23.0711)])
def test_point_equals_source_q_times_s_in_two_zones(
    served: tuple[str, dict[str, Any]], lon: float, lat: float
) -> None:
    url, cog = served
    got = httpx.get(url + "/embeddings/position", params={"lon": lon, "lat": lat, "year": 2024})
    assert got.status_code == 200, got.text
    body = got.json()
    item, codes, scales = tile_for(cog, lon, lat)
    row, col = expected_pixel(item, lon, lat)
    assert body["item"] == item["id"] and body["collection"] == EMB_COLLECTION
    assert body["asset"] == "embeddings" and body["scale_asset"] == "scales"
    assert body["pixel"]["row"] == row and body["pixel"]["col"] == col
    assert body["pixel"]["crs"] == item["properties"]["proj:code"]
    assert body["href"].startswith(url + "/data/")
    expected = codes[:, row, col].astype(np.float32) * scales[row, col]
    assert np.array_equal(np.array(body["embedding"], dtype=np.float32), expected)
    assert body["scale"] == float(scales[row, col])
    assert body["dimensions"] == codes.shape[0]
    link = httpx.get(body["links"][0]["href"])
    assert link.status_code == 200 and link.json()["id"] == item["id"]


def test_point_errors(served: tuple[str, dict[str, Any]]) -> None:
    url, cog = served
    item, _, _ = tile_for(cog, 71.93, 23.01)
    _a, _, c, _, _e, f = item["properties"]["proj:transform"]
    back = Transformer.from_crs(item["properties"]["proj:code"], "EPSG:4326", always_xy=True)
    lon, lat = back.transform(c + 10 * 10.5, f - 10 * 10.5)  # pixel (10, 10): invalid block
    if GridCell.containing(lon, lat).name != item["properties"]["tessera:grid"]:
        lon, lat = back.transform(c + 10 * 45.5, f - 10 * 45.5)
    invalid = httpx.get(url + "/embeddings/position", params={"lon": lon, "lat": lat, "year": 2024})
    assert invalid.status_code == 422, invalid.text
    assert (
        invalid.json()["code"] == "InvalidPixel"
        and "no valid embedding" in invalid.json()["description"]
    )
    outside = httpx.get(
        url + "/embeddings/position", params={"lon": 80.0, "lat": 10.0, "year": 2024}
    )
    assert outside.status_code == 404 and outside.json()["code"] == "OutsideCoverage"
    other_year = httpx.get(
        url + "/embeddings/position", params={"lon": 71.97, "lat": 23.03, "year": 2020}
    )
    assert other_year.status_code == 404
    bad = httpx.get(url + "/embeddings/position", params={"lon": 200, "lat": 23, "year": 2024})
    assert bad.status_code == 400
    unknown = httpx.get(
        url + "/embeddings/position",
        params={"lon": 71.97, "lat": 23.03, "year": 2024, "collection": "nope"},
    )
    assert unknown.status_code == 404


def test_batch_points(served: tuple[str, dict[str, Any]]) -> None:
    url, cog = served
    points = [
        {"lon": 71.9713, "lat": 23.0342},
        {"lon": 80.0, "lat": 10.0},
        {"lon": 72.0321, "lat": 23.0711},
    ]
    got = httpx.post(url + "/embeddings/positions", json={"points": points, "year": 2024})
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert [r["status"] for r in results] == [200, 404, 200]
    assert results[1]["error"]["code"] == "OutsideCoverage"
    for r, p in zip([results[0], results[2]], [points[0], points[2]], strict=True):
        item, codes, scales = tile_for(cog, p["lon"], p["lat"])
        row, col = expected_pixel(item, p["lon"], p["lat"])
        assert np.array_equal(
            np.array(r["embedding"], dtype=np.float32),
            codes[:, row, col].astype(np.float32) * scales[row, col],
        )


def test_batch_points_as_arrow_equal_the_json_bit_for_bit(
    served: tuple[str, dict[str, Any]],
) -> None:
    import pyarrow as pa

    url, cog = served
    item, _, _ = tile_for(cog, 71.93, 23.01)
    _a, _, c, _, _e, f = item["properties"]["proj:transform"]
    back = Transformer.from_crs(item["properties"]["proj:code"], "EPSG:4326", always_xy=True)
    invalid = back.transform(c + 10 * 10.5, f - 10 * 10.5)  # an invalid block (see above)
    if GridCell.containing(*invalid).name != item["properties"]["tessera:grid"]:
        invalid = back.transform(c + 10 * 45.5, f - 10 * 45.5)
    points = [
        {"lon": 71.9713, "lat": 23.0342},
        {"lon": 80.0, "lat": 10.0},
        {"lon": invalid[0], "lat": invalid[1]},
        {"lon": 72.0321, "lat": 23.0711},
        {"lon": 71.9713, "lat": 23.0342},
    ]
    body = {"points": points, "year": 2024}
    as_json = httpx.post(
        url + "/embeddings/positions", json=body, headers={"Accept-Encoding": "br"}
    )
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers.get("content-encoding") == "br"
    arrow_type = "application/vnd.apache.arrow.stream"
    for params, accept in (({"f": "arrow"}, {}), ({}, {"Accept": arrow_type})):
        got = httpx.post(
            url + "/embeddings/positions",
            json=body,
            params=params,
            headers={"Accept-Encoding": "br, gzip", **accept},
        )
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == arrow_type
        assert "content-encoding" not in got.headers  # float32 arrays are sent as they are
        table = pa.ipc.open_stream(got.content).read_all()
        assert table.num_rows == len(points)
        assert table.schema.metadata[b"year"] == b"2024"
        rows = table.to_pylist()
        dims = as_json.json()["results"][0]["dimensions"]
        assert table.schema.metadata[b"dimensions"] == str(dims).encode()
        vectors = table.column("embedding").combine_chunks()
        assert vectors.type == pa.list_(pa.float32(), dims)
        values = vectors.values.to_numpy().reshape(len(points), dims)
        for k, (row, expected) in enumerate(zip(rows, as_json.json()["results"], strict=True)):
            assert row["status"] == expected["status"]
            assert row["lon"] == expected["lon"] and row["lat"] == expected["lat"]
            if "error" in expected:
                assert row["error"] == expected["error"]["code"]
                assert row["error_description"] == expected["error"]["description"]
                assert row["embedding"] is None and np.isnan(values[k]).all()
                continue
            assert row["error"] is None and row["item"] == expected["item"]
            assert row["collection"] == expected["collection"]
            assert (row["row"], row["col"], row["crs"]) == (
                expected["pixel"]["row"],
                expected["pixel"]["col"],
                expected["pixel"]["crs"],
            )
            assert row["scale"] == np.float32(expected["scale"])
            want = np.array(expected["embedding"], dtype=np.float32)
            assert values[k].tobytes() == want.tobytes()
        assert [r["status"] for r in rows] == [200, 404, 422, 200, 200]
    for encoding, used in (
        ("gzip", "gzip"),
        ("identity", None),
        ("zstd, br, gzip", "zstd"),  # ZSTD first when accepted
        ("zstd;q=0, br", "br"),  # ... never when refused
    ):  # every compressor passes Arrow through
        plain = {"Accept-Encoding": encoding}
        got = httpx.post(
            url + "/embeddings/positions", json=body, params={"f": "arrow"}, headers=plain
        )
        assert "content-encoding" not in got.headers
        assert pa.ipc.open_stream(got.content).read_all().num_rows == len(points)
        text = httpx.post(url + "/embeddings/positions", json=body, headers=plain)
        assert text.headers.get("content-encoding") == used
        assert text.json() == as_json.json()  # decoded by httpx (zstandard installed)
    nowhere = {"points": [{"lon": 80.0, "lat": 10.0}] * 2, "year": 2024}  # no value at all
    empty = httpx.post(url + "/embeddings/positions", json=nowhere, params={"f": "arrow"})
    assert empty.status_code == 200, empty.text
    table = pa.ipc.open_stream(empty.content).read_all()
    assert table.column("embedding").null_count == 2 and table.column("status").to_pylist() == [
        404,
        404,
    ]
    bad = httpx.post(url + "/embeddings/positions", json=body, params={"f": "xml"})
    assert bad.status_code == 400 and bad.json()["code"] == "BadRequest"
    assert "json" in bad.json()["description"] and "arrow" in bad.json()["description"]
    json_anyway = httpx.post(url + "/embeddings/positions", json=body, params={"f": "json"})
    assert json_anyway.headers["content-type"] == "application/json"
    assert json_anyway.json() == as_json.json()


def _expected_area(cog: dict[str, Any], polygon: Any) -> tuple[int, int, Any]:
    """Independent count/valid/mean: pixel centres in the polygon and in their own cell."""
    from shapely import contains_xy

    count = valid = 0
    total = None
    for item, codes, scales in cog["tiles"].values():
        a, _, c, _, e, f = item["properties"]["proj:transform"]
        h, w = scales.shape
        rows, cols = np.mgrid[0:h, 0:w]
        xs, ys = c + (cols + 0.5) * a, f + (rows + 0.5) * e
        lons, lats = Transformer.from_crs(
            item["properties"]["proj:code"], "EPSG:4326", always_xy=True
        ).transform(xs, ys)
        cell = GridCell.parse(item["properties"]["tessera:grid"])
        west, south, east, north = cell.bounds
        own = (lons >= west) & (lons < east) & (lats >= south) & (lats < north)
        inside = own & contains_xy(polygon, lons, lats)
        ok = inside & np.isfinite(scales) & (scales > 0) & (scales < 1) & ~(codes == -128).any(0)
        count += int(inside.sum())
        valid += int(ok.sum())
        vec = (codes[:, ok].astype(np.float32) * scales[ok]).astype(np.float64).sum(1)
        total = vec if total is None else total + vec
    return count, valid, (total / valid).astype(np.float32)


def test_zonal_statistics_across_two_zones(served: tuple[str, dict[str, Any]]) -> None:
    from shapely.geometry import Polygon, mapping

    url, cog = served
    polygon = Polygon([(71.985, 23.002), (72.02, 23.003), (72.015, 23.03), (71.99, 23.025)])
    got = httpx.post(url + "/embeddings/area", json={"geometry": mapping(polygon), "year": 2024})
    assert got.status_code == 200, got.text
    body = got.json()
    count, valid, mean = _expected_area(cog, polygon)
    assert body["count"] == count and body["valid"] == valid
    assert body["valid_fraction"] == pytest.approx(valid / count)
    assert np.allclose(np.array(body["mean"], dtype=np.float32), mean, rtol=1e-5, atol=1e-6)
    assert {s["crs"] for s in body["sources"]} == {"EPSG:32642", "EPSG:32643"}
    assert sum(s["count"] for s in body["sources"]) == count

    # covering the invalid corner block lowers the valid fraction below 1
    item, _, _ = tile_for(cog, 71.93, 23.01)
    _a, _, c, _, _e, f = item["properties"]["proj:transform"]
    back = Transformer.from_crs(item["properties"]["proj:code"], "EPSG:4326", always_xy=True)
    corners = [
        back.transform(c + dx, f - dy) for dx, dy in [(0, 0), (800, 0), (800, 800), (0, 800)]
    ]
    corner = Polygon(corners)
    part = httpx.post(
        url + "/embeddings/area", json={"geometry": mapping(corner), "year": 2024}
    ).json()
    count, valid, _ = _expected_area(cog, corner)
    assert part["count"] == count and part["valid"] == valid and valid < count

    bad = httpx.post(
        url + "/embeddings/area",
        json={"geometry": {"type": "Point", "coordinates": [72, 23]}, "year": 2024},
    )
    assert bad.status_code == 422 and bad.json()["code"] == "InvalidGeometry"
    far = Polygon([(80, 10), (80.01, 10), (80.01, 10.01)])
    assert (
        httpx.post(
            url + "/embeddings/area", json={"geometry": mapping(far), "year": 2024}
        ).status_code
        == 404
    )


def test_openapi_documents_embedding_routes(served: tuple[str, dict[str, Any]]) -> None:
    url, _ = served
    # the first /api builds the OpenAPI document: seconds on a loaded machine (httpx's default
    # 5 s timeout made this test flaky)
    spec = httpx.get(url + "/api", timeout=60).json()
    paths = spec["paths"]
    for path in ["/embeddings/position", "/embeddings/positions", "/embeddings/area"]:
        assert path in paths
    schemas = spec["components"]["schemas"]
    assert {"PositionResult", "AreaResponse", "PixelModel"} <= set(schemas)


def _relocated(cog: dict[str, Any], href_for: Callable[[str], str]) -> list[dict[str, Any]]:
    """The tiles' items with asset hrefs rewritten by ``href_for(relative key)``."""
    import copy

    out = []
    for item, _, _ in cog["tiles"].values():
        item = copy.deepcopy(item)
        folder = f"{EMB_COLLECTION}/2024/{item['properties']['tessera:grid']}"
        for key in ("embeddings", "scales"):
            item["assets"][key]["href"] = href_for(f"{folder}/{key}.tif")
        item["links"] = []
        out.append(item)
    return out


def _check_point(url: str, cog: dict[str, Any], lon: float, lat: float, prefix: str) -> None:
    got = httpx.get(url + "/embeddings/position", params={"lon": lon, "lat": lat, "year": 2024})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["href"].startswith(prefix)
    item, codes, scales = tile_for(cog, lon, lat)
    row, col = expected_pixel(item, lon, lat)
    expected = codes[:, row, col].astype(np.float32) * scales[row, col]
    assert np.array_equal(np.array(body["embedding"], dtype=np.float32), expected)


def test_point_reads_over_http_and_s3(
    pg_cluster: Any,
    live_api: LiveApi,
    cog_catalog: dict[str, Any],
    s3: Any,
    tmp_path: Any,
) -> None:
    import json
    import uuid

    from tests.fixtures_api import make_collection

    root = cog_catalog["root"]
    # a file server for the COGs (another API instance), read by the API through /vsicurl/
    files = live_api(create_app(ApiSettings(data_dir=root), "postgresql://x:y@127.0.0.1:1/none"))
    server, bucket = s3
    client = server.client()
    for path in root.rglob("*.tif"):
        client.upload_file(str(path), bucket, str(path.relative_to(root)))
    for scheme, href_for in [
        ("http", lambda key: f"{files}/data/{key}"),
        ("s3", lambda key: f"s3://{bucket}/{key}"),
    ]:
        name = f"t_{uuid.uuid4().hex[:10]}"
        with pg_cluster.template_clone("pgstac_template", name) as dsn:
            nd = tmp_path / f"{scheme}.ndjson"
            objs = [make_collection(EMB_COLLECTION), *_relocated(cog_catalog, href_for)]
            nd.write_text("".join(json.dumps(o) + "\n" for o in objs))
            load(dsn, str(nd))
            url = live_api(create_app(ApiSettings(), dsn))  # no data_dir: remote reads
            prefix = files if scheme == "http" else "s3://"
            _check_point(url, cog_catalog, 71.9713, 23.0342, prefix)
            _check_point(url, cog_catalog, 72.0321, 23.0711, prefix)


def test_positions_format_follows_the_accept_header_qualities() -> None:
    from starlette.requests import Request

    from tessera_stac.api.embeddings import positions_format

    arrow = "application/vnd.apache.arrow.stream"

    def chosen(accept: str | None, f: str | None = None) -> str:
        headers = [] if accept is None else [(b"accept", accept.encode())]
        return positions_format(Request({"type": "http", "headers": headers}), f)

    assert chosen(None) == "json"
    assert chosen("*/*") == "json"
    assert chosen(arrow) == "arrow"
    assert chosen(f"application/json;q=0.5, {arrow}") == "arrow"
    assert chosen(f"{arrow};q=0.5, application/json") == "json"
    assert chosen(f"{arrow};q=0, */*") == "json"  # refused by name
    assert chosen(f"{arrow};q=oops") == "json"
    assert chosen(f"text/html, {arrow.upper()};q=0.9") == "arrow"
    assert chosen(arrow, "json") == "json"  # f wins over the header
    assert chosen(None, "arrow") == "arrow"
    with pytest.raises(ValueError, match="parquet"):
        chosen(None, "parquet")


@pytest.mark.parametrize("scale", [0.0421, None])
def test_batch_rows_are_the_models_dump(scale: float | None) -> None:
    """A batch writes each point's JSON object directly (no model per point): it must stay the
    ``PositionResult`` dump, key for key and in the same order, with or without a value."""
    from starlette.requests import Request

    from tessera_stac.api.embeddings import (
        ErrorBody,
        PositionResult,
        _failed,
        _item_link,
        _result,
        _row,
    )
    from tessera_stac.api.readers import Pixel, PointValue, ReadError

    request = Request(
        {"type": "http", "scheme": "http", "server": ("h", 80), "path": "/", "headers": []}
    )
    item = {"collection": "tessera-embeddings-v1", "id": "grid_0.15_23.05_2024"}
    value = PointValue(
        Pixel(17, 901, "EPSG:32643", 605175.0, 2555825.0),
        scale,
        np.arange(128, dtype=np.float32) / 7,
        "embeddings",
        "scales" if scale is not None else None,
        "http://h/data/x/embeddings.tif",
    )
    model = _result(request, 72.5, 23.05, 2024, item, value).model_dump(exclude_none=True)
    model.pop("embedding")
    row = _row(72.5, 23.05, 2024, item, value, [_item_link(request, item).model_dump()])
    assert list(row.items()) == list(model.items())
    exc = ReadError(404, "OutsideCoverage", "no tile covers the point")
    failed = PositionResult.model_construct(
        lon=1.0,
        lat=2.0,
        year=2024,
        error=ErrorBody(code=exc.code, description=exc.description),
        status=exc.status,
        links=[],
    ).model_dump(exclude_none=True)
    assert list(_failed(1.0, 2.0, 2024, exc).items()) == list(failed.items())


def test_json_depth_scan_equals_a_byte_by_byte_scan() -> None:
    """The body depth check (strings cut out by a regular expression, brackets counted by
    numpy) gives what a byte-by-byte scan gives on every text, valid JSON or not: escaped
    quotes, backslashes at the end, unterminated strings, brackets inside strings."""
    import random

    from tessera_stac.api.bounds import json_text_depth

    def scanned(data: bytes) -> int:
        depth = deepest = 0
        in_string = escaped = False
        for byte in data:
            if in_string:
                if escaped:
                    escaped = False
                elif byte == 0x5C:
                    escaped = True
                elif byte == 0x22:
                    in_string = False
            elif byte == 0x22:
                in_string = True
            elif byte in (0x5B, 0x7B):
                depth += 1
                deepest = max(deepest, depth)
            elif byte in (0x5D, 0x7D):
                depth -= 1
        return deepest

    rng = random.Random(7)
    texts = [b"", b"[]", b'{"a": "[[[", "b": [[1]]}', b'["\\"[["]', b'"\\', b'"abc\\"[[', b"]]]["]
    texts += [bytes(rng.choice(b'[]{}"\\ax\n,:\x00\xff') for _ in range(rng.randint(0, 40)))
              for _ in range(20000)]  # fmt: skip
    for text in texts:
        assert json_text_depth(text) == scanned(text), text
        assert json_text_depth(text.decode("latin-1")) == scanned(text.decode("latin-1").encode())


def test_zstd_answers_stream_and_decode_to_the_body() -> None:
    """The ZSTD responder: a whole body and a streamed one (several chunks, flushed block by
    block) decode to what the app sent; small bodies go as they are; Accept-Encoding
    qualities are read (q=0 refuses, a malformed q counts as 0)."""
    import asyncio

    import zstandard

    from tessera_stac.api.app import _ZstdResponder
    from tessera_stac.api.bounds import header_qualities

    chunks = [b'{"a": "' + bytes([65 + k]) * 200_000 + b'"}' for k in range(3)]

    def app_sending(parts: list[bytes]) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            for k, part in enumerate(parts):
                await send({"type": "http.response.body", "body": part,
                            "more_body": k < len(parts) - 1})  # fmt: skip

        return app

    def run(parts: list[bytes]) -> tuple[dict[bytes, bytes], bytes]:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        responder = _ZstdResponder(app_sending(parts), 500, ())
        asyncio.run(responder({"type": "http"}, None, send))  # type: ignore[arg-type]
        headers = dict(sent[0]["headers"])
        return headers, b"".join(m.get("body", b"") for m in sent[1:])

    for parts in ([b"".join(chunks)], chunks):
        headers, body = run(parts)
        assert headers[b"content-encoding"] == b"zstd"
        reader = zstandard.ZstdDecompressor().stream_reader(body)
        assert reader.read() == b"".join(parts)
    headers, body = run([b"{}"])
    assert b"content-encoding" not in headers and body == b"{}"
    assert header_qualities("gzip, br;q=0.5, zstd;q=0, x;q=oops") == {
        "gzip": 1.0, "br": 0.5, "zstd": 0.0, "x": 0.0,
    }  # fmt: skip

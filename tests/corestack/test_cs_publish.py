"""watersheds publish: the real Bhavnagar layer, every input format, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.store import multihash, sha256_file
from tessera_stac.publisher.watersheds.layer import (
    MWS_COLLECTION_ID,
    BlockName,
    normalise_name,
    publish_mws_layer,
    read_mws_layer,
)

NOW = datetime(2025, 3, 1, tzinfo=UTC)
BLOCK = BlockName("Gujarat", "Bhavnagar", "Bhavnagar")
ITEM_ID = "gujarat_bhavnagar_bhavnagar_mws"


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp" in p.name or ".old-" in p.name]


def test_normalise_name_like_corestack() -> None:
    assert normalise_name("Uttar Pradesh") == "uttar_pradesh"
    assert normalise_name("  Bhavnagar ") == "bhavnagar"
    assert normalise_name("Sri Ganganagar (Rural)") == "sri_ganganagar_rural"
    assert normalise_name("Dadra & Nagar Haveli") == "dadra__nagar_haveli"
    assert BlockName("Jharkhand", "Dumka", "Masalia").mws_item_id == "jharkhand_dumka_masalia_mws"
    with pytest.raises(InputError):
        normalise_name("()")


def test_real_layer_publishes(tmp_path: Path, bhavnagar_geojson: Path, stac_validate: Any) -> None:
    result = publish_mws_layer(bhavnagar_geojson, BLOCK, tmp_path, now=NOW)
    assert result.item_id == ITEM_ID and result.row_count == 116 and result.warnings == ()
    folder = tmp_path / MWS_COLLECTION_ID / ITEM_ID
    item = json.loads((folder / f"{ITEM_ID}.json").read_text())
    stac_validate(item)
    props = item["properties"]
    assert props["table:row_count"] == 116
    names = [c["name"] for c in props["table:columns"]]
    assert names[0] == "uid" and "area_in_ha" in names and names[-1] == "geometry"
    assert props["corestack:block"] == "bhavnagar" and item["collection"] == MWS_COLLECTION_ID
    # valid for the TESSERA years (2017 to the publication year), published at NOW
    assert props["start_datetime"] == props["datetime"] == "2017-01-01T00:00:00Z"
    assert props["end_datetime"] == f"{NOW.year}-12-31T23:59:59Z"
    assert props["created"] == props["updated"] == "2025-03-01T00:00:00Z"

    source = gpd.read_file(bhavnagar_geojson)
    assert np.allclose(item["bbox"], source.total_bounds, atol=1e-7)
    foot = shapely.geometry.shape(item["geometry"])
    assert foot.contains(shapely.union_all(source.geometry.values))
    assert len(json.dumps(item["geometry"])) < 60_000

    table = gpd.read_parquet(folder / f"{ITEM_ID}.parquet")
    assert table.crs.to_epsg() == 4326
    assert sorted(table["uid"]) == sorted(source["uid"])
    merged = table.set_index("uid").loc[source["uid"]]
    assert shapely.equals(merged.geometry.values, source.geometry.values).all()
    assert np.allclose(merged["area_in_ha"], source["area_in_ha"])
    as_geojson = gpd.read_file(folder / f"{ITEM_ID}.geojson")
    assert sorted(as_geojson["uid"]) == sorted(source["uid"])
    for key, asset in item["assets"].items():
        path = folder / asset["href"]
        assert asset["file:size"] == path.stat().st_size, key
        assert asset["file:checksum"] == multihash(sha256_file(path)), key

    collection = json.loads((tmp_path / MWS_COLLECTION_ID / "collection.json").read_text())
    stac_validate(collection)
    assert {"rel": "item", "href": f"./{ITEM_ID}/{ITEM_ID}.json"}.items() <= {
        k: v for link in collection["links"] if link["rel"] == "item" for k, v in link.items()
    }.items()
    assert np.allclose(collection["extent"]["spatial"]["bbox"][0], item["bbox"])
    root = json.loads((tmp_path / "catalog.json").read_text())
    assert any(link["href"] == f"./{MWS_COLLECTION_ID}/collection.json" for link in root["links"])
    assert not _leftovers(tmp_path)

    # republishing replaces the item in place; the root link is not duplicated
    publish_mws_layer(bhavnagar_geojson, BLOCK, tmp_path, now=NOW)
    root = json.loads((tmp_path / "catalog.json").read_text())
    assert sum(link["rel"] == "child" for link in root["links"]) == 1
    assert not _leftovers(tmp_path)


def test_existing_root_catalog_is_kept(tmp_path: Path, bhavnagar_frame: Any) -> None:
    """The collections an earlier root listed stay listed (the root lists every collection)."""
    (tmp_path / "tessera-v1").mkdir()
    (tmp_path / "tessera-v1" / "collection.json").write_text(
        json.dumps({"type": "Collection", "id": "tessera-v1", "title": "Embeddings v1"})
    )
    (tmp_path / "catalog.json").write_text(
        json.dumps(
            {
                "type": "Catalog",
                "id": "tessera",
                "stac_version": "1.1.0",
                "description": "embeddings",
                "links": [{"rel": "child", "href": "./tessera-v1/collection.json"}],
            }
        )
    )
    src = tmp_path / "few.geojson"
    bhavnagar_frame.iloc[:5].to_file(src, driver="GeoJSON")
    publish_mws_layer(src, BLOCK, tmp_path, now=NOW)
    root = json.loads((tmp_path / "catalog.json").read_text())
    hrefs = [link["href"] for link in root["links"]]
    assert "./tessera-v1/collection.json" in hrefs
    assert f"./{MWS_COLLECTION_ID}/collection.json" in hrefs


@pytest.mark.parametrize("fmt", ["gpkg", "shp", "geoparquet", "plain-parquet", "utm-geojson"])
def test_formats(tmp_path: Path, bhavnagar_frame: Any, fmt: str) -> None:
    frame = bhavnagar_frame.iloc[:12].copy()
    expected = frame.set_index("uid").geometry
    if fmt == "gpkg":
        src = tmp_path / "mws.gpkg"
        frame.to_file(src, driver="GPKG", layer="mws", GEOMETRY_NAME="geom")
    elif fmt == "shp":
        src = tmp_path / "mws.shp"
        frame.to_file(src, driver="ESRI Shapefile")
    elif fmt == "geoparquet":
        src = tmp_path / "mws.parquet"
        frame.rename_geometry("the_geom").to_parquet(src)
    elif fmt == "plain-parquet":
        src = tmp_path / "mws.parquet"
        plain = frame.drop(columns="geometry").assign(the_geom=shapely.to_wkb(frame.geometry))
        plain.to_parquet(src)  # pandas: no GeoParquet metadata, no CRS
    else:
        src = tmp_path / "mws_utm.geojson"
        frame.to_crs(32643).to_file(src, driver="GeoJSON")  # GDAL writes the legacy crs member
        assert "crs" in json.loads(src.read_text())
    layer = read_mws_layer(src)
    assert layer.frame.crs.to_epsg() == 4326
    assert list(layer.frame["uid"]) == list(frame["uid"])
    got = layer.frame.set_index("uid").geometry
    diff = [a.symmetric_difference(b).area / b.area for a, b in zip(got, expected, strict=True)]
    assert max(diff) < 1e-6
    if fmt == "utm-geojson":
        assert any("reprojected from EPSG:32643" in w for w in layer.warnings)
    if fmt == "plain-parquet":
        assert any("declares no CRS" in w for w in layer.warnings)
    result = publish_mws_layer(src, BLOCK, tmp_path / "out", now=NOW)
    assert result.row_count == 12


def _geojson(tmp_path: Path, features: list[dict[str, Any]], name: str = "bad.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _square(x: float = 72.0, y: float = 21.8, d: float = 0.01) -> dict[str, Any]:
    return {
        "type": "Polygon",
        "coordinates": [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]],
    }


def _feat(uid: Any, geom: dict[str, Any] | None) -> dict[str, Any]:
    props = {} if uid is ... else {"uid": uid}
    return {"type": "Feature", "properties": props, "geometry": geom}


BAD_CASES: dict[str, tuple[list[dict[str, Any]] | None, str]] = {
    "empty-file": (None, "the file is empty"),
    "no-features": ([], "no features"),
    "missing-uid-column": ([_feat(..., _square())], "no 'uid' column"),
    "null-uid": ([_feat("1_1", _square()), _feat(None, _square(72.1))], "without a 'uid'"),
    "duplicate-uid": ([_feat("1_1", _square()), _feat("1_1", _square(72.1))], "duplicate"),
    "empty-geometry": ([_feat("1_1", _square()), _feat("1_2", None)], "empty or missing"),
    "points": ([_feat("1_1", {"type": "Point", "coordinates": [72, 21]})], "must be polygons"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_writes_nothing(tmp_path: Path, case: str) -> None:
    features, message = BAD_CASES[case]
    if features is None:
        src = tmp_path / "empty.geojson"
        src.write_bytes(b"")
    else:
        src = _geojson(tmp_path, features)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        publish_mws_layer(src, BLOCK, out, now=NOW)
    assert message in str(err.value) and str(src) in str(err.value)
    assert not out.exists() or not any(out.rglob("*.json"))


def test_empty_geometry_dropped_on_request_and_invalid_repaired(tmp_path: Path) -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[72.0, 21.8], [72.01, 21.81], [72.01, 21.8], [72.0, 21.81], [72.0, 21.8]]],
    }
    src = _geojson(tmp_path, [_feat("1_1", _square()), _feat("1_2", None), _feat(7, bowtie)])
    result = publish_mws_layer(src, BLOCK, tmp_path / "out", now=NOW, drop_empty=True)
    assert result.row_count == 2
    assert any("dropped 1 MWS" in w and "1_2" in w for w in result.warnings)
    assert any("repaired 1 invalid" in w and "7" in w for w in result.warnings)
    table = gpd.read_parquet(result.item_path.parent / f"{ITEM_ID}.parquet")
    assert list(table["uid"]) == ["1_1", "7"] and table.is_valid.all()
    assert (table.geom_type == "MultiPolygon").all()


def test_shapefile_without_crs_in_metres_is_rejected(tmp_path: Path, bhavnagar_frame: Any) -> None:
    src = tmp_path / "mws.shp"
    bhavnagar_frame.iloc[:3].to_crs(32643).to_file(src)
    src.with_suffix(".prj").unlink()
    with pytest.raises(InputError, match="no CRS"):
        read_mws_layer(src)


def test_publish_to_s3(tmp_path: Path, bhavnagar_frame: Any, s3: Any) -> None:
    server, bucket = s3
    src = tmp_path / "mws.geojson"
    bhavnagar_frame.iloc[:4].to_file(src, driver="GeoJSON")
    result = publish_mws_layer(
        src,
        BLOCK,
        tmp_path / "out",
        now=NOW,
        s3_url=f"s3://{bucket}/cat",
        storage=server.storage_settings(),
    )
    client = server.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"cat/{MWS_COLLECTION_ID}/{ITEM_ID}/{ITEM_ID}.parquet" in keys
    assert f"cat/{MWS_COLLECTION_ID}/collection.json" in keys and "cat/catalog.json" in keys
    assert set(result.s3_keys) == keys
    body = client.get_object(Bucket=bucket, Key=f"cat/{MWS_COLLECTION_ID}/{ITEM_ID}/{ITEM_ID}.json")
    assert json.loads(body["Body"].read())["id"] == ITEM_ID
    remote = gpd.read_file(f"/vsis3/{bucket}/cat/{MWS_COLLECTION_ID}/{ITEM_ID}/{ITEM_ID}.geojson")
    assert list(remote["uid"]) == list(bhavnagar_frame["uid"].iloc[:4])


def test_cli_publish_and_error(tmp_path: Path, bhavnagar_geojson: Path) -> None:
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "watersheds", "publish"]
    args = ["--state", "Gujarat", "--district", "Bhavnagar", "--block", "Bhavnagar"]
    ok = subprocess.run(
        [*cli, str(bhavnagar_geojson), *args, "-o", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["mws"] == 116
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    bad = subprocess.run(
        [*cli, str(empty), *args, "-o", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 3
    assert bad.stderr.strip().splitlines() == [f"error: {empty}: the file is empty"]


def test_valid_years_option(tmp_path: Path, bhavnagar_frame: Any) -> None:
    src = tmp_path / "few.geojson"
    bhavnagar_frame.iloc[:3].to_file(src, driver="GeoJSON")
    result = publish_mws_layer(src, BLOCK, tmp_path / "out", now=NOW, valid_years=(2020, 2022))
    props = json.loads(result.item_path.read_text())["properties"]
    assert (props["start_datetime"], props["end_datetime"]) == (
        "2020-01-01T00:00:00Z",
        "2022-12-31T23:59:59Z",
    )
    collection = json.loads(result.collection_path.read_text())
    assert collection["extent"]["temporal"]["interval"] == [
        ["2020-01-01T00:00:00Z", "2022-12-31T23:59:59Z"]
    ]
    with pytest.raises(InputError, match="after the last"):
        publish_mws_layer(src, BLOCK, tmp_path / "out", now=NOW, valid_years=(2024, 2020))


def test_footprint_is_computed_once_per_geometries(bhavnagar_frame: Any) -> None:
    """The footprint of the same geometries comes from the per-process cache and equals a fresh
    computation; other geometries (or another margin) get their own."""
    from tessera_stac.publisher.watersheds.layer import _footprint, footprint

    frame = bhavnagar_frame.iloc[:6].copy()  # a few MWS: the cache, not the outline, is tested
    first = footprint(frame)
    again = footprint(frame.drop(columns=[c for c in frame.columns if c != "geometry"]))
    assert again is first
    fresh = _footprint(np.asarray(frame.geometry.values), 0.002)
    assert shapely.to_wkb(first) == shapely.to_wkb(fresh)
    assert first.contains(shapely.union_all(frame.geometry.values))
    fewer = footprint(frame.iloc[:3])
    assert fewer is not first and not shapely.equals(fewer, first)
    wider = footprint(frame, margin=0.004)
    assert wider is not first and wider.contains(first)

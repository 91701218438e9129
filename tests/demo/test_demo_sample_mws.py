"""The synthetic micro-watershed layer the demo generates (publisher/samples/mws.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box, shape
from shapely.ops import unary_union

from tessera_stac.publisher.samples.mws import (
    TERRAIN_FIELDS,
    MwsLayerSpec,
    mws_layer,
    write_mws_layer,
)

TISRI = MwsLayerSpec(bbox=(86.0, 24.5, 86.2, 24.7), district="giridih", block="tisri")


def test_layer_looks_like_corestack_wfs_output() -> None:
    layer = mws_layer(TISRI)
    assert layer["type"] == "FeatureCollection"
    assert layer["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::4326"
    assert layer["totalFeatures"] == len(layer["features"]) >= 20
    for feature in layer["features"]:
        assert feature["geometry"]["type"] == "MultiPolygon"
        assert feature["geometry_name"] == "the_geom"
        assert feature["id"].startswith("giridih_tisri_cluster.")
        props = feature["properties"]
        assert isinstance(props["uid"], str) and props["uid"].startswith("12_")
        assert props["area_in_ha"] > 0
        assert sum(props[name] for name in TERRAIN_FIELDS) == pytest.approx(100, abs=1e-3)


def test_polygons_are_valid_unique_and_tile_the_area() -> None:
    features = mws_layer(TISRI)["features"]
    uids = [f["properties"]["uid"] for f in features]
    assert len(set(uids)) == len(uids)
    shapes = [shape(f["geometry"]) for f in features]
    assert all(s.is_valid and not s.is_empty for s in shapes)
    region = box(*TISRI.bbox)
    union = unary_union(shapes)
    # the watersheds cover the block (edges snapped to a ~30 m raster) and barely overlap
    assert union.symmetric_difference(region).area / region.area < 0.01
    overlap = sum(s.area for s in shapes) - union.area
    assert overlap / region.area < 0.01
    # typical MWS size as in real layers: around 1000 ha
    areas = sorted(f["properties"]["area_in_ha"] for f in features)
    assert 500 < areas[len(areas) // 2] < 2500


def test_deterministic_and_written_atomically(tmp_path: Path) -> None:
    assert mws_layer(TISRI) == mws_layer(TISRI)
    other = mws_layer(MwsLayerSpec(**{**TISRI.__dict__, "seed": 8}))
    assert other != mws_layer(TISRI)
    path = tmp_path / "sub" / "tisri.geojson"
    count = write_mws_layer(TISRI, path)
    assert count == len(json.loads(path.read_text())["features"])
    assert [p.name for p in path.parent.iterdir()] == ["tisri.geojson"]  # no temp file left


def test_sample_mws_command(run_cli: Any, tmp_path: Path) -> None:
    """``tessera-stac sample mws`` writes the same layer as the library, and says what it did."""
    path = tmp_path / "tisri_mws.geojson"
    args = ["sample", "mws", str(path), "--bbox", "86.0,24.5,86.2,24.7"]
    done = run_cli([*args, "--district", "giridih", "--block", "tisri", "--json"])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["mws"] == len(json.loads(path.read_text())["features"]) >= 20
    assert json.loads(path.read_text()) == json.loads(json.dumps(mws_layer(TISRI)))
    bad = run_cli(["sample", "mws", str(tmp_path / "x.geojson"), "--bbox", "86.2,24.5,86.0,24.7"])
    assert bad.returncode == 3 and bad.stderr.startswith("error: --bbox")
    assert not (tmp_path / "x.geojson").exists()

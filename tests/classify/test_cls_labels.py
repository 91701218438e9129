"""Reading labels: formats, CRS, numeric fields, geometry types, bounds (no catalog needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessera_stac.catalog.errors import InputError
from tessera_stac.publisher.classify.labels import read_labels


def _geojson(path: Path, features: list[dict], crs: str | None = None) -> Path:
    doc: dict = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def _point(x: float, y: float, **props: object) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": props,
    }


def test_numeric_field_is_regression_unless_told(tmp_path: Path) -> None:
    path = _geojson(
        tmp_path / "codes.geojson", [_point(72.0, 21.8, code=1), _point(72.01, 21.8, code=2)]
    )
    auto = read_labels(path, field="code")
    assert auto.task == "regression" and auto.targets == [1.0, 2.0]
    forced = read_labels(path, field="code", task="classification")
    assert forced.task == "classification" and forced.classes == ["1", "2"]


def test_projected_labels_are_reprojected(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    frame = gpd.GeoDataFrame(
        {"class": ["a", "b"]}, geometry=[Point(72.0, 21.8), Point(72.05, 21.85)], crs="EPSG:4326"
    ).to_crs("EPSG:32643")
    frame.to_file(tmp_path / "utm.gpkg", driver="GPKG")
    labels = read_labels(tmp_path / "utm.gpkg")
    lon, lat = labels.geometries[1]["coordinates"]
    assert lon == pytest.approx(72.05, abs=1e-9) and lat == pytest.approx(21.85, abs=1e-9)


def test_refused(tmp_path: Path) -> None:
    line = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[72.0, 21.8], [72.01, 21.81]]},
        "properties": {"class": "a"},
    }
    cases = [
        (
            _geojson(tmp_path / "line.geojson", [line, _point(72.0, 21.8, **{"class": "b"})]),
            "LineString",
        ),
        (_geojson(tmp_path / "empty.geojson", []), "no labels"),
        (
            _geojson(tmp_path / "nofield.geojson", [_point(72.0, 21.8, kind="a")]),
            "no field 'class'",
        ),
        (
            _geojson(
                tmp_path / "missing.geojson",
                [_point(72.0, 21.8, **{"class": "a"}), _point(72.0, 21.8, **{"class": None})],
            ),
            "have no 'class'",
        ),
    ]
    (tmp_path / "labels.txt").write_text("72,21.8,a\n")
    cases.append((tmp_path / "labels.txt", "must be .geojson"))
    (tmp_path / "nolon.csv").write_text("x1,y1,class\n72,21.8,a\n")
    cases.append((tmp_path / "nolon.csv", "lon and lat columns"))
    cases.append((tmp_path / "absent.geojson", "no such labels file"))
    for path, message in cases:
        with pytest.raises(InputError, match=message):
            read_labels(path)
    with pytest.raises(InputError, match="task must be"):
        read_labels(cases[0][0], task="segmentation")

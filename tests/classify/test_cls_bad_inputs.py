"""Bad labels, names and options get a clear error and change nothing in the catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tessera_stac.catalog.errors import InputError
from tessera_stac.publisher.classify.train import TrainOptions, train


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _points(path: Path, rows: list[tuple[float, float, Any]], field: str = "class") -> Path:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {field: value},
        }
        for lon, lat, value in rows
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _sample_rows(labels: Path) -> list[tuple[float, float, Any]]:
    features = json.loads(labels.read_text())["features"]
    return [(*f["geometry"]["coordinates"], f["properties"]["class"]) for f in features]


def _water_points(sample: Any, n: int) -> list[tuple[float, float]]:
    """``n`` water pixel centres of grid_71.95_21.85 inside its own cell."""
    from tessera_stac.catalog.reader.blocks import pixel_centres, transformer

    with rasterio.open(sample.truth["grid_71.95_21.85"]) as ds:
        rows, cols = np.nonzero(ds.read(1) == 0)
        xs, ys = pixel_centres(ds.transform, rows, cols)
        lon, lat = transformer(ds.crs.to_string(), "EPSG:4326").transform(xs, ys)
    own = (lon > 71.901) & (lon < 71.999) & (lat > 21.801) & (lat < 21.899)
    pick = np.flatnonzero(own)[:: max(1, int(own.sum()) // n)][:n]
    return list(zip(lon[pick].tolist(), lat[pick].tolist(), strict=True))


def test_bad_labels_refused_and_nothing_written(
    landcover_sample: Any, landcover_catalog: Path, tmp_path: Path
) -> None:
    rows = _sample_rows(landcover_sample.labels)
    dest = str(landcover_catalog)
    before = _snapshot(landcover_catalog)
    water = _water_points(landcover_sample, 10)
    assert len(water) == 10
    cases: list[tuple[Path, dict[str, Any], str]] = [
        (_points(tmp_path / "one.geojson", [r for r in rows if r[2] == "forest"]), {}, "only one"),
        (
            _points(tmp_path / "off.geojson", [*rows[::12], (10.0, 10.0, "forest")]),
            {},
            "off the published tiles",
        ),
        (
            _points(tmp_path / "markup.geojson", [*rows[::12], (*rows[0][:2], "<b>x</b>")]),
            {},
            "class name",
        ),
        (
            _points(tmp_path / "range.geojson", [*rows[::12], (200.0, 21.85, "forest")]),
            {},
            "out-of-range",
        ),
        (_points(tmp_path / "many.geojson", rows), {"max_labels": 100}, "at most 100"),
        (
            _points(
                tmp_path / "water.geojson",
                [(x, y, "forest") for x, y in water[:5]] + [(x, y, "bare") for x, y in water[5:]],
            ),
            {},
            "no label lies on a valid pixel",
        ),
        (_points(tmp_path / "field.geojson", rows[::12]), {"field": "landuse"}, "no field"),
        (_points(tmp_path / "ok.geojson", rows[::12]), {"name": "../escape"}, "model name"),
        (_points(tmp_path / "ok2.geojson", rows[::12]), {"name": "tessera-v1"}, "reserved"),
        (_points(tmp_path / "ok3.geojson", rows[::12]), {"year": 2019}, "no tessera-embeddings"),
        (_points(tmp_path / "ok4.geojson", rows[::12]), {"kind": "forest"}, "--kind"),
    ]
    csv = tmp_path / "nan.csv"
    csv.write_text("lon,lat,class\n72.0,21.85,forest\nnan,21.86,bare\n")
    cases.append((csv, {}, "NaN or out-of-range"))
    for path, change, message in cases:
        options = TrainOptions(**{"name": "bad", "year": 2024, **change})
        with pytest.raises(InputError, match=message):
            train(path, dest, options)
    assert _snapshot(landcover_catalog) == before


def test_name_collision_needs_replace(
    landcover_sample: Any, landcover_catalog: Path, tmp_path: Path
) -> None:
    labels = _points(tmp_path / "few.geojson", _sample_rows(landcover_sample.labels)[::4])
    dest = str(landcover_catalog)
    first = train(labels, dest, TrainOptions(name="twice", year=2024)).head
    before = _snapshot(landcover_catalog)
    with pytest.raises(InputError, match="exists; choose another --name or pass --replace"):
        train(labels, dest, TrainOptions(name="twice", year=2024, kind="knn"))
    assert _snapshot(landcover_catalog) == before
    second = train(labels, dest, TrainOptions(name="twice", year=2024, kind="knn", replace=True))
    assert first.kind == "logistic" and second.head.kind == "knn"


def test_cli_error_is_one_line(
    landcover_sample: Any, landcover_catalog: Path, tmp_path: Path
) -> None:
    labels = _points(tmp_path / "one.geojson", [(72.0, 21.85, "forest")] * 3)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera_stac.cli.main",
            "classify",
            "train",
            str(labels),
            "--year",
            "2024",
            "--name",
            "x",
            "--out",
            str(landcover_catalog),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "only one class ('forest')" in proc.stderr
    assert "Traceback" not in proc.stderr

"""Class maps: every valid pixel equals the head on its dequantised vector, nodata elsewhere;
COGs, items and the static catalog; resuming; any year of the collection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.heads import Head
from tessera_stac.catalog.reader import EmbeddingReader
from tessera_stac.catalog.store import open_store
from tessera_stac.publisher.classify.map import map_classes
from tessera_stac.publisher.classify.train import TrainOptions, train
from tessera_stac.publisher.classify.vectors import list_items
from tessera_stac.publisher.engines.local import ProcessEngine


@pytest.fixture
def trained(landcover_sample: Any, landcover_catalog: Path) -> Path:
    """The land-cover catalog copy with a linear probe ``landcover`` trained on 2024."""
    train(
        landcover_sample.labels, str(landcover_catalog), TrainOptions(name="landcover", year=2024)
    )
    return landcover_catalog


def _check_tile(dest: Path, name: str, year: int, entry: Any) -> dict[str, Any]:
    head = Head.from_json((dest / "tessera-models" / name / "head.json").read_bytes())
    folder = dest / c.classes_collection_id(name) / f"{entry.cell.name}_{year}"
    item = json.loads((folder / f"{folder.name}.json").read_text())
    with EmbeddingReader(entry.item, self_href=entry.href) as reader:
        values, valid = reader.read()  # the whole tile through the reader kernel
    want_classes, want_prob = head.predict(values, valid)
    # an independent numpy reference of the linear probe on every pixel
    assert head.coef is not None and head.scaler_mean is not None
    assert head.intercept is not None and head.scaler_scale is not None
    x = (values[valid].astype(np.float64) - head.scaler_mean) / head.scaler_scale
    logits = x @ head.coef.T + head.intercept
    reference = head.class_values[np.argmax(logits, axis=1)]
    np.testing.assert_array_equal(want_classes[valid], reference)
    with rasterio.open(folder / "classes.tif") as ds:
        classes = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        assert ds.crs.to_string() == entry.item["properties"]["proj:code"]
        assert list(ds.transform)[:6] == pytest.approx(entry.item["properties"]["proj:transform"])
        assert ds.overviews(1), "class COG has overviews"
        assert ds.profile["blockxsize"] == 256
    with rasterio.open(folder / "probability.tif") as ds:
        prob = ds.read(1)
    assert classes.shape == valid.shape
    np.testing.assert_array_equal(classes[valid], reference)  # every valid pixel
    assert (classes[~valid] == 0).all() and (classes[valid] > 0).all()
    # the map computes the winning probability from codes and scales in float32: the same
    # value to float32 rounding (the class, above, is the same exactly)
    np.testing.assert_allclose(prob, want_prob, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(prob[~valid]).all() and (prob[valid] > 0.2).all()
    assert (~valid).sum() > 1000  # the tile has water/invalid pixels to check
    return item


def test_class_maps_equal_the_head_on_every_pixel(
    trained: Path, stac_validate: Callable[[dict[str, Any]], None]
) -> None:
    report = map_classes("landcover", 2024, str(trained), engine=ProcessEngine(2))
    assert report.totals == {"ok": 2, "skipped": 0, "failed": 0}
    store = open_store(str(trained))
    for entry in list_items(store, "tessera-embeddings-v1", 2024):
        item = _check_tile(trained, "landcover", 2024, entry)
        stac_validate(item)
        classes = item["assets"]["classes"]["classification:classes"]
        assert [cl["value"] for cl in classes] == [1, 2, 3, 4, 5]
        assert item["properties"]["proj:code"] == entry.item["properties"]["proj:code"]
        derived = {link["href"] for link in item["links"] if link["rel"] == "derived_from"}
        folder = trained / "tessera-classes-landcover" / item["id"]
        resolved = {(folder / href).resolve() for href in derived}
        assert resolved == {
            Path(entry.href).resolve(),
            (trained / "tessera-models/landcover/landcover.json").resolve(),
        }
        counts = item["properties"]["tessera:pixels"]
        with rasterio.open(folder / "classes.tif") as ds:
            assert counts["nodata"] == int((ds.read(1) == 0).sum())
    collection = json.loads((trained / "tessera-classes-landcover/collection.json").read_text())
    stac_validate(collection)
    assert sum(link["rel"] == "item" for link in collection["links"]) == 2
    root = json.loads((trained / "catalog.json").read_text())
    assert "./tessera-classes-landcover/collection.json" in {x["href"] for x in root["links"]}
    saved = json.loads(Path(report.report_href).read_text())
    assert saved["totals"]["ok"] == 2


@pytest.mark.slow
def test_resume_remap_after_retraining_and_another_year(
    landcover_sample: Any, trained: Path
) -> None:
    dest = str(trained)
    first = map_classes("landcover", 2024, dest, grids=["grid_72.05_21.85"])
    assert first.totals["ok"] == 1
    again = map_classes("landcover", 2024, dest)
    assert again.totals == {"ok": 1, "skipped": 1, "failed": 0}  # resumes: only the missing one
    # a new head under the same name makes the maps stale: every tile is redone
    train(
        landcover_sample.labels,
        dest,
        TrainOptions(name="landcover", year=2024, c=0.05, replace=True),
    )
    redone = map_classes("landcover", 2024, dest)
    assert redone.totals == {"ok": 2, "skipped": 0, "failed": 0}
    # the head trained on 2024 maps 2025 of the same collection
    later = map_classes("landcover", 2025, dest)
    assert later.totals["ok"] == 2
    store = open_store(dest)
    for entry in list_items(store, "tessera-embeddings-v1", 2025):
        _check_tile(trained, "landcover", 2025, entry)
    with pytest.raises(Exception, match="no head 'nope'"):
        map_classes("nope", 2024, dest)


@pytest.mark.slow
def test_regression_head_maps_values(
    landcover_sample: Any, landcover_catalog: Path, tmp_path: Path
) -> None:
    values = {"cropland": 1.0, "forest": 25.0, "grassland": 0.5, "built-up": 8.0, "bare": 0.0}
    doc = json.loads(landcover_sample.labels.read_text())
    for feature in doc["features"]:
        feature["properties"] = {"height": values[feature["properties"]["class"]]}
    labels = tmp_path / "height.geojson"
    labels.write_text(json.dumps(doc))
    dest = str(landcover_catalog)
    head = train(labels, dest, TrainOptions(name="height", year=2024, field="height")).head
    report = map_classes("height", 2024, dest, grids=["grid_72.05_21.85"])
    assert report.totals["ok"] == 1
    entry = next(
        e
        for e in list_items(open_store(dest), "tessera-embeddings-v1", 2024)
        if e.cell.name == "grid_72.05_21.85"
    )
    folder = landcover_catalog / "tessera-classes-height" / "grid_72.05_21.85_2024"
    item = json.loads((folder / "grid_72.05_21.85_2024.json").read_text())
    assert set(item["assets"]) == {"value"}
    with EmbeddingReader(entry.item, self_href=entry.href) as reader:
        vectors, valid = reader.read()
    want, _ = head.predict(vectors, valid)
    with rasterio.open(folder / "value.tif") as ds:
        got = ds.read(1)
        assert ds.dtypes[0] == "float32"
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[~valid]).all() and np.isfinite(got[valid]).all()
    assert 0 < float(np.median(got[valid])) < 25

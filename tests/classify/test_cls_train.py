"""Training heads on the land-cover sample: accuracy against truth and scikit-learn, honest CV,
the report, the published model item."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.heads import Head
from tessera_stac.catalog.reader import EmbeddingReader
from tessera_stac.catalog.reader.blocks import to_pixel, transformer
from tessera_stac.catalog.store import open_store
from tessera_stac.publisher.classify.train import TrainOptions, TrainResult, gather, train
from tessera_stac.publisher.classify.vectors import list_items
from tessera_stac.publisher.samples.landcover import class_names


def _labels_lonlat(path: Path) -> np.ndarray:
    features = json.loads(path.read_text())["features"]
    return np.array([f["geometry"]["coordinates"] for f in features], dtype=float)


def _held_out_pixels(sample: Any, dest: Path, step: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Every ``step``-th valid pixel of both 2024 tiles that is not a label: vectors and the
    truth class name index (0-based in ``class_names()``)."""
    store = open_store(str(dest))
    labelled = _labels_lonlat(sample.labels)
    xs, ys = [], []
    for entry in list_items(store, "tessera-embeddings-v1", sample.year):
        with rasterio.open(sample.truth[entry.cell.name]) as ds:
            truth = ds.read(1)
            crs, transform = ds.crs.to_string(), ds.transform
        with EmbeddingReader(entry.item, self_href=entry.href) as reader:
            values, valid = reader.read()
        lx, ly = transformer("EPSG:4326", crs).transform(labelled[:, 0], labelled[:, 1])
        cols, rows = (np.floor(v).astype(int) for v in to_pixel(transform, lx, ly))
        inside = (rows >= 0) & (rows < truth.shape[0]) & (cols >= 0) & (cols < truth.shape[1])
        keep = valid & (truth > 0)
        keep[rows[inside], cols[inside]] = False  # held out: never a training pixel
        keep[:, 1::step] = False
        keep[1::step, :] = False
        xs.append(values[keep])
        ys.append(truth[keep].astype(np.int64) - 1)
    return np.concatenate(xs), np.concatenate(ys)


def _accuracy(head: Head, x: np.ndarray, truth: np.ndarray) -> float:
    predicted, _ = head.predict(x, np.ones(len(x), bool))
    names = class_names()
    as_truth = np.full(256, -1)
    for cl in head.classes:
        as_truth[cl.value] = names.index(cl.name)
    return float(np.mean(as_truth[predicted] == truth))


def _trained(
    sample: Any, base: Path, options: TrainOptions, colors: dict[str, str] | None = None
) -> tuple[Path, TrainResult]:
    """A private copy of the published land-cover catalog with one head trained into it."""
    dest = base / "published"
    shutil.copytree(sample.dest, dest)
    return dest, train(sample.labels, str(dest), options, colors=colors)


@pytest.fixture(scope="module")
def landcover_head(
    landcover_sample: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainResult]:
    """The logistic head ``landcover`` (forest coloured), trained once for the module: the
    accuracy test reads its head, the model-item test what it published (the only head there)."""
    options = TrainOptions(name="landcover", year=2024)
    return _trained(
        landcover_sample, tmp_path_factory.mktemp("lc-head"), options, {"forest": "#1B7837"}
    )


@pytest.fixture(scope="module")
def knn_head(
    landcover_sample: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainResult]:
    """The k-NN head ``neighbours``, trained once for the module (accuracy and CV tests)."""
    options = TrainOptions(name="neighbours", year=2024, kind="knn")
    return _trained(landcover_sample, tmp_path_factory.mktemp("knn-head"), options)


@pytest.mark.slow
def test_heads_beat_or_match_sklearn_on_held_out_pixels(
    landcover_sample: Any,
    landcover_head: tuple[Path, TrainResult],
    knn_head: tuple[Path, TrainResult],
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    dest, probe = landcover_head[0], landcover_head[1].head
    knn = knn_head[1].head
    data = gather(landcover_sample.labels, open_store(str(dest)), TrainOptions(name="x", year=2024))
    assert len(data.y) == 5 * 120  # every sample label lies on a valid pixel
    x, truth = _held_out_pixels(landcover_sample, dest)
    assert len(x) > 100_000

    names = data.labels.classes  # the head's value v is names[v - 1]
    to_truth = np.array([-1] + [class_names().index(n) for n in names])
    sk_lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(data.x, data.y)
    sk_knn = KNeighborsClassifier(n_neighbors=5).fit(data.x, data.y)
    sk_lr_acc = float(np.mean(to_truth[sk_lr.predict(x)] == truth))
    sk_knn_acc = float(np.mean(to_truth[sk_knn.predict(x)] == truth))

    probe_acc = _accuracy(probe, x, truth)
    knn_acc = _accuracy(knn, x, truth)
    assert probe_acc >= sk_lr_acc - 1e-4  # the same estimator, published as data
    assert probe_acc >= sk_knn_acc
    assert knn_acc >= sk_knn_acc - 1e-4
    assert probe_acc > 0.8  # the classes are learnable from 120 labels each


def test_blocked_and_random_cv_both_reported_and_differ(
    knn_head: tuple[Path, TrainResult],
) -> None:
    result = knn_head[1]
    cv = result.report["cross_validation"]
    assert cv["random"]["folds"] == cv["blocked"]["folds"] == 5
    assert cv["blocked"]["blocks"] >= 10
    # on spatially smooth data neighbours leak into a random split: it is optimistic
    assert cv["random"]["accuracy"] > cv["blocked"]["accuracy"] + 0.02
    per_class = cv["blocked"]["per_class"]
    assert [row["name"] for row in per_class] == sorted(class_names())
    assert sum(row["support"] for row in per_class) == 600
    matrix = np.array(cv["blocked"]["confusion_matrix"]["matrix"])
    assert matrix.shape == (5, 5) and matrix.sum() == 600
    assert np.trace(matrix) / 600 == pytest.approx(cv["blocked"]["accuracy"])
    curve = result.report["learning_curve"]
    sizes = [p["labels_per_class"] for p in curve]
    assert sizes == sorted(sizes) and sizes[0] == 2 and sizes[-1] >= 60
    assert curve[-1]["score"] > curve[0]["score"] + 0.1  # more labels help


def test_model_item_published_and_valid(
    landcover_head: tuple[Path, TrainResult],
    stac_validate: Callable[[dict[str, Any]], None],
) -> None:
    landcover_catalog, result = landcover_head
    folder = landcover_catalog / "tessera-models" / "landcover"
    item = json.loads((folder / "landcover.json").read_text())
    stac_validate(item)
    assert c.MLM_SCHEMA_URI in item["stac_extensions"]
    props = item["properties"]
    cv = result.report["cross_validation"]
    assert props[c.ACCURACY_PROP] == round(cv["blocked"]["accuracy"], 4)
    assert props[c.ACCURACY_RANDOM_PROP] == round(cv["random"]["accuracy"], 4)
    assert props["mlm:framework"] == "scikit-learn" and props[c.LABELS_PROP] == 600
    classes = props["mlm:output"][0]["classification:classes"]
    assert {cl["name"]: cl["color_hint"] for cl in classes}["forest"] == "1B7837"
    head = Head.from_json((folder / "head.json").read_bytes())
    assert head.to_json() == result.head.to_json()
    assert head.collection == "tessera-embeddings-v1" and head.year == 2024
    assert (folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((folder / "report.json").read_text())
    assert report["cross_validation"] == json.loads(json.dumps(cv))
    for key in ("head", "report", "chart"):
        asset = item["assets"][key]
        assert asset["file:size"] == (folder / asset["href"][2:]).stat().st_size
    derived = [link for link in item["links"] if link["rel"] == "derived_from"]
    targets = {(folder / link["href"]).resolve() for link in derived}
    assert all(t.is_file() for t in targets)
    assert len(derived) == 3  # the two embedding items and the TESSERA model
    collection = json.loads((landcover_catalog / "tessera-models" / "collection.json").read_text())
    stac_validate(collection)
    assert "./landcover/landcover.json" in {link["href"] for link in collection["links"]}
    root = json.loads((landcover_catalog / "catalog.json").read_text())
    assert "./tessera-models/collection.json" in {link["href"] for link in root["links"]}
    # rebuilding the static catalog (after more tiles are published) keeps the head listed
    from tessera_stac.catalog.static import build_static_catalog

    build_static_catalog(open_store(str(landcover_catalog)))
    collection = json.loads((landcover_catalog / "tessera-models" / "collection.json").read_text())
    hrefs = {link["href"] for link in collection["links"] if link["rel"] == "item"}
    assert hrefs == {"./landcover/landcover.json", "./tessera-v1/tessera-v1.json"}


def _write(path: Path, features: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_polygons_regression_and_formats(
    landcover_sample: Any, landcover_catalog: Path, tmp_path: Path
) -> None:
    import geopandas as gpd

    features = json.loads(landcover_sample.labels.read_text())["features"]
    frame = gpd.GeoDataFrame.from_features(features, crs="EPSG:4326")
    dest = str(landcover_catalog)

    # the same points as GeoPackage, GeoParquet and CSV give the same vectors
    frame.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    frame.to_parquet(tmp_path / "labels.parquet")
    csv = frame.assign(lon=frame.geometry.x, lat=frame.geometry.y).drop(columns="geometry")
    csv.to_csv(tmp_path / "labels.csv", index=False)
    opts = TrainOptions(name="fmt", year=2024)
    want = gather(landcover_sample.labels, open_store(dest), opts)
    for name in ("labels.gpkg", "labels.parquet", "labels.csv"):
        got = gather(tmp_path / name, open_store(dest), opts)
        np.testing.assert_array_equal(got.x, want.x)
        np.testing.assert_array_equal(got.y, want.y)

    # polygons: ~60 m squares around the first 20 points of each class, pixels sampled
    squares = frame.groupby("class").head(20).copy()
    squares["geometry"] = squares.to_crs(32643).buffer(30, cap_style="square").to_crs(4326)
    squares.to_file(tmp_path / "squares.geojson", driver="GeoJSON")
    result = train(tmp_path / "squares.geojson", dest, TrainOptions(name="squares", year=2024))
    labels = result.report["labels"]
    assert labels["polygons"] == 100 and labels["count"] == 100
    assert labels["polygon_pixels"] == labels["vectors"] > 100 * 10

    # a numeric field trains a regression head (ridge), R² reported both ways
    values = {"cropland": 1.0, "forest": 25.0, "grassland": 0.5, "built-up": 8.0, "bare": 0.0}
    height = frame.assign(height=[values[k] for k in frame["class"]]).drop(columns="class")
    height.to_file(tmp_path / "height.geojson", driver="GeoJSON")
    result = train(
        tmp_path / "height.geojson",
        dest,
        TrainOptions(name="height", year=2024, field="height"),
    )
    assert result.head.task == "regression" and result.head.kind == "linear"
    cv = result.report["cross_validation"]
    assert cv["blocked"]["r2"] > 0.5 and cv["random"]["r2"] > 0.5
    item = json.loads((landcover_catalog / "tessera-models" / "height" / "height.json").read_text())
    assert item["properties"][c.R2_PROP] == round(cv["blocked"]["r2"], 4)

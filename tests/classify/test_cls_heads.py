"""The pure head function (catalog/heads.py) against scikit-learn on the same vectors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

from tessera_stac.catalog.heads import Head, HeadError, make_classes

DIM = 128


def _blobs(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, DIM))
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(scale=2.5, size=(n, DIM))
    return x.astype(np.float32), y + 1


def _logistic_head(model: LogisticRegression, scaler: StandardScaler | None, n: int) -> Head:
    return Head(
        name="probe",
        kind="logistic",
        task="classification",
        collection="tessera-embeddings-v1",
        year=2024,
        classes=tuple(make_classes([f"class {i}" for i in range(1, n + 1)])),
        coef=model.coef_,
        intercept=model.intercept_,
        scaler_mean=None if scaler is None else scaler.mean_,
        scaler_scale=None if scaler is None else scaler.scale_,
    )


def _knn_head(vectors: np.ndarray, labels: np.ndarray, k: int) -> Head:
    return Head(
        name="knn",
        kind="knn",
        task="classification",
        collection="tessera-embeddings-v1",
        year=2024,
        classes=tuple(make_classes(["a", "b", "c", "d"])),
        vectors=vectors,
        labels=labels,
        k=k,
    )


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("scaled", [False, True])
def test_logistic_equals_sklearn(classes: int, scaled: bool) -> None:
    x, y = _blobs(600, classes)
    scaler = StandardScaler().fit(x) if scaled else None
    xs = scaler.transform(x) if scaler is not None else x
    model = LogisticRegression(max_iter=500).fit(xs[:400], y[:400])
    head = Head.from_json(_logistic_head(model, scaler, classes).to_json())  # through JSON
    test = x[400:]
    want_p = model.predict_proba(xs[400:])
    got_p = head.predict_proba(test)
    np.testing.assert_allclose(got_p, want_p, rtol=1e-5, atol=1e-6)
    got, prob = head.predict(test, np.ones(len(test), bool))
    np.testing.assert_array_equal(got, model.predict(xs[400:]))
    np.testing.assert_allclose(prob, want_p.max(axis=1), rtol=1e-5, atol=1e-6)


def test_logistic_near_ties_follow_float64() -> None:
    """The float32 logits decide only where their rounding cannot change the winner: pixels
    on (and a hair off) the boundary between two classes get scikit-learn's float64 answer."""
    x, y = _blobs(800, 3, seed=5)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=500).fit(scaler.transform(x), y)
    head = Head.from_json(_logistic_head(model, scaler, 3).to_json())
    weights, bias = head._linear
    # points on the 1|2 boundary: move each vector along (w1 - w2) until z1 == z2 in float64
    d = weights[:, 0] - weights[:, 1]
    base = x[:300].astype(np.float64)
    lead = base @ d + (bias[0] - bias[1])
    on = base - np.outer(lead / (d @ d), d)
    rng = np.random.default_rng(6)
    near = (on + rng.normal(scale=1e-6, size=on.shape)).astype(np.float32)
    valid = np.ones(len(near), bool)
    valid[::10] = False
    near[~valid] = np.nan  # the reader's invalid pixels
    got, prob = head.predict(near, valid)
    want_p = model.predict_proba(scaler.transform(near[valid].astype(np.float64)))
    np.testing.assert_array_equal(got[valid], model.classes_[np.argmax(want_p, axis=1)])
    np.testing.assert_allclose(prob[valid], want_p.max(axis=1), rtol=1e-5, atol=1e-6)
    assert (got[~valid] == 0).all() and np.isnan(prob[~valid]).all()
    # and they really are near ties in float32: its own argmax disagrees on some of them
    w32, b32, _ = head._linear32
    assert (np.argmax(near[valid] @ w32 + b32, axis=1) != np.argmax(want_p, axis=1)).any()


@pytest.mark.parametrize("kind", ["logistic", "knn"])
def test_predict_on_scaled_codes_equals_predict_on_vectors(kind: str) -> None:
    """The class map's path (codes and per-pixel scales, no float vectors) gives the classes
    of ``predict`` on the reader's vectors ``float32(codes) * scale`` exactly, including on
    pixels a hair from a class boundary, and their probabilities to float32 rounding."""
    x, y = _blobs(900, 4, seed=7)
    scaler = StandardScaler().fit(x)
    rng = np.random.default_rng(8)
    if kind == "logistic":  # a twin of class 1, 1e-7 apart: a near tie on every pixel
        model = LogisticRegression(max_iter=500).fit(scaler.transform(x), y)
        coef, intercept = model.coef_.copy(), model.intercept_.copy()
        coef[1] = coef[0] + 1e-7 * rng.normal(size=DIM)
        intercept[1] = intercept[0]
        twin = SimpleNamespace(coef_=coef, intercept_=intercept)
        head = Head.from_json(_logistic_head(twin, scaler, 4).to_json())  # type: ignore[arg-type]
    else:
        head = _knn_head(x, y, 5)
    scales = rng.uniform(0.02, 0.2, size=(60, 50)).astype(np.float32)
    codes = np.clip(
        np.round(x[rng.integers(0, len(x), 3000)].reshape(60, 50, DIM) / scales[..., None]),
        -127,
        127,
    ).astype(np.int8)
    valid = rng.random((60, 50)) > 0.1
    values = codes.astype(np.float32) * scales[..., None]  # what the reader returns
    values[~valid] = np.nan
    want, want_p = head.predict(values, valid)
    got, got_p = head.predict_scaled_codes(codes, scales, valid)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_p, want_p, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert (got[~valid] == 0).all() and np.isnan(got_p[~valid]).all()
    if kind == "logistic":  # float32 alone cannot tell the twins apart: the re-check decided
        w32, b32, _ = head._linear32
        alone = head.class_values[np.argmax(values[valid] @ w32 + b32, axis=1)]
        assert (alone != want[valid]).any()
        assert {1, 2} <= set(np.unique(got[valid]).tolist())


def test_knn_equals_sklearn() -> None:
    x, y = _blobs(900, 4, seed=1)
    model = KNeighborsClassifier(n_neighbors=7).fit(x[:600], y[:600])
    head = _knn_head(x[:600], y[:600], 7)
    head = Head.from_json(head.to_json())
    np.testing.assert_allclose(head.predict_proba(x[600:]), model.predict_proba(x[600:]))
    got, _ = head.predict(x[600:], np.ones(300, bool))
    np.testing.assert_array_equal(got, model.predict(x[600:]))


def test_regression_heads_equal_sklearn() -> None:
    x, _ = _blobs(500, 3, seed=2)
    target = x[:, :4].sum(axis=1) * 1.5 + 10
    ridge = Ridge(alpha=1.0).fit(x[:300], target[:300])
    head = Head(
        name="height",
        kind="linear",
        task="regression",
        collection="tessera-embeddings-v1",
        year=2024,
        coef=ridge.coef_[None, :],
        intercept=np.array([ridge.intercept_]),
    )
    head = Head.from_json(head.to_json())
    value, same = head.predict(x[300:], np.ones(200, bool))
    assert value is same and value.dtype == np.float32
    np.testing.assert_allclose(value, ridge.predict(x[300:]), rtol=1e-5, atol=1e-4)
    knn = KNeighborsRegressor(n_neighbors=5).fit(x[:300], target[:300])
    head = Head(
        name="height-knn",
        kind="knn",
        task="regression",
        collection="tessera-embeddings-v1",
        year=2024,
        vectors=x[:300],
        labels=target[:300],
        k=5,
    )
    head = Head.from_json(head.to_json())
    np.testing.assert_allclose(head.predict_value(x[300:]), knn.predict(x[300:]), rtol=1e-5)


def test_predict_nodata_and_shape() -> None:
    x, y = _blobs(300, 3, seed=3)
    model = LogisticRegression(max_iter=300).fit(x, y)
    head = _logistic_head(model, None, 3)
    grid = x[:200].reshape(10, 20, DIM)
    valid = np.ones((10, 20), bool)
    valid[2:4, 5:9] = False
    grid[~valid] = np.nan  # invalid pixels may hold anything
    classes, prob = head.predict(grid, valid)
    assert classes.shape == (10, 20) and classes.dtype == np.uint8
    assert (classes[~valid] == 0).all() and np.isnan(prob[~valid]).all()
    assert (classes[valid] >= 1).all() and (prob[valid] >= 1 / 3 - 1e-6).all()
    with pytest.raises(HeadError, match="must be"):
        head.predict(grid, valid[:5])


def _doc() -> dict:
    x, y = _blobs(100, 2, seed=4)
    model = LogisticRegression(max_iter=200).fit(x, y)
    return _logistic_head(model, None, 2).to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "other"}, "type must be"),
        ({"version": 2}, "version"),
        ({"name": "../etc"}, "model name"),
        ({"name": "tessera-v1"}, "reserved"),
        ({"kind": "forest"}, "kind must be"),
        ({"year": "2024"}, "year"),
        ({"collection": "a b"}, "collection"),
        ({"coef": [[1.0] * 127]}, "coef has shape"),
        ({"coef": [[float("nan")] * 128]}, "finite"),
        ({"intercept": [0.0, 1.0, 2.0]}, "intercept"),
        ({"classes": [{"value": 1, "name": "<b>x</b>", "color": "#000000"}] * 2}, "class name"),
        ({"classes": [{"value": 0, "name": "a", "color": "#000000"}] * 2}, "class value"),
        ({"classes": [{"value": 1, "name": "a", "color": "red"}] * 2}, "color"),
        ({"extra": 1}, "unknown head fields"),
        ({"vectors": "AAAA"}, "no vectors"),
    ],
)
def test_bad_documents_refused(change: dict, message: str) -> None:
    doc = _doc()
    doc.update(change)
    with pytest.raises(HeadError, match=message):
        Head.from_dict(json.loads(json.dumps(doc)))


def test_knn_bad_vectors_refused() -> None:
    x, y = _blobs(20, 2, seed=5)
    head = Head(
        name="knn",
        kind="knn",
        task="classification",
        collection="c",
        year=2024,
        classes=tuple(make_classes(["a", "b"])),
        vectors=x,
        labels=y,
        k=3,
    )
    doc = head.to_dict()
    for change, message in [
        ({"vectors": doc["vectors"][:-8]}, "bytes"),
        ({"vectors": "@@@@"}, "base64"),
        ({"k": 21}, "more than"),
        ({"k": 0}, "k 0"),
        ({"labels": [3] * 20}, "class values"),
        ({"labels": [1.5] * 20}, "integer"),
    ]:
        bad = dict(doc, **change)
        with pytest.raises(HeadError, match=message):
            Head.from_dict(bad)


@pytest.mark.parametrize("openmp", [False, True])
def test_one_blas_thread_limits_the_pools_and_restores_them(openmp: bool) -> None:
    """Heads are applied (BLAS) and fitted (BLAS and OpenMP: the training of the CLI and of
    ``POST /classify``) with one thread; the limits before are back afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from tessera_stac.catalog.heads import one_blas_thread

    LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])  # scikit-learn's pools loaded
    with threadpool_limits(limits=2):
        before = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
        with one_blas_thread(openmp=openmp):
            inside = threadpool_info()
        after = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    apis = {p["user_api"] for p in inside}
    assert "blas" in apis and (not openmp or "openmp" in apis), apis
    for pool in inside:
        limited = pool["user_api"] == "blas" or openmp
        expected = 1 if limited else before[pool["filepath"]]
        assert pool["num_threads"] == expected, pool
    assert after == before and set(before.values()) == {2}, before

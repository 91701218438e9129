"""Train a head on labels: read the vectors, fit with scikit-learn, measure honestly, publish.

``train`` reads the labels (``labels.py``), the embeddings under them from the published
static catalog (``vectors.py``, through the reader kernel), fits a scikit-learn estimator
(multinomial logistic regression by default, k-NN, ridge or k-NN regression for a numeric
field) and turns its parameters into a :class:`~tessera_stac.catalog.heads.Head` (plain JSON).

Accuracy is measured twice with the same folds count: random K-fold, and spatially blocked
K-fold (``GroupKFold`` with square blocks of ``block_size_m`` as groups, larger than the
smoothness of the land cover so that a label's neighbours cannot leak into its own test fold).
On spatially smooth data the random split is optimistic; both are reported, the blocked one is
the headline. Per-class precision/recall/F1, the confusion matrix and a learning curve over
labels per class come from the blocked folds.

Published under ``tessera-models/{name}/``: the model item (MLM), ``head.json``,
``report.json`` and ``report.png``; then the models collection and the root are rewritten.
Everything is checked and computed before the first write: bad input changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.heads import (
    Head,
    HeadError,
    check_name,
    make_classes,
    one_blas_thread,
)
from tessera_stac.catalog.store import LocalStore, S3Store, multihash, open_store
from tessera_stac.catalog.store_settings import StorageSettings
from tessera_stac.publisher.classify.labels import MAX_LABELS, Labels, read_labels
from tessera_stac.publisher.classify.vectors import (
    CatalogItem,
    Samples,
    choose_collection,
    list_items,
    read_label_vectors,
)

KINDS = ("logistic", "knn")
DEFAULT_BLOCK_M = 1000.0
DEFAULT_FOLDS = 5
#: learning-curve sizes (labels per class, or labels for regression), those below the data
CURVE_SIZES = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
METERS_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class TrainOptions:
    """What to train.

    Attributes:
        name: the head's name (model item id, ``tessera-classes-{name}``).
        year: the year of the embeddings under the labels.
        kind: ``logistic`` (linear probe; ridge for regression) or ``knn``.
        field: the labels' property holding the class (or the value).
        task: ``auto`` (numeric field: regression), ``classification`` or ``regression``.
        k: neighbours of a k-NN head.
        c: inverse regularisation of the logistic regression (ridge: ``alpha = 1/c``).
        block_size_m: side of the spatial blocks of the blocked cross-validation.
        folds: folds of both cross-validations.
        seed: seed of the random folds, the polygon sampling and the learning curve.
        collection: the embedding collection (default: the only one published).
        max_labels: refuse labels files with more features.
        replace: replace a head of the same name trained before.
    """

    name: str
    year: int
    kind: str = "logistic"
    field: str = "class"
    task: str = "auto"
    k: int = 5
    c: float = 1.0
    block_size_m: float = DEFAULT_BLOCK_M
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    collection: str | None = None
    max_labels: int = MAX_LABELS
    replace: bool = False


@dataclass
class TrainResult:
    """What ``train`` produced."""

    head: Head
    report: dict[str, Any]
    item: dict[str, Any]
    written: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ estimators
def make_estimator(kind: str, task: str, k: int, c_value: float, n: int) -> Any:
    """The scikit-learn estimator of a head (k capped at the ``n`` training vectors)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "knn":
        neighbours = max(1, min(k, n))
        if task == "classification":
            return KNeighborsClassifier(n_neighbors=neighbours)
        return KNeighborsRegressor(n_neighbors=neighbours)
    if task == "classification":
        return make_pipeline(StandardScaler(), LogisticRegression(C=c_value, max_iter=2000))
    return make_pipeline(StandardScaler(), Ridge(alpha=1.0 / c_value))


def head_from_estimator(
    estimator: Any,
    *,
    name: str,
    kind: str,
    task: str,
    collection: str,
    year: int,
    classes: list[str],
    colors: dict[str, str] | None,
    x: np.ndarray,
    y: np.ndarray,
) -> Head:
    """The plain parameters of a fitted estimator as a :class:`Head`."""
    head_classes = tuple(make_classes(classes, colors)) if task == "classification" else ()
    common: dict[str, Any] = {
        "name": name,
        "task": task,
        "collection": collection,
        "year": year,
        "classes": head_classes,
    }
    if kind == "knn":
        return Head(
            kind="knn",
            vectors=np.asarray(x, dtype=np.float32),
            labels=np.asarray(y),
            k=int(estimator.n_neighbors),
            **common,
        )
    scaler, model = estimator.steps[0][1], estimator.steps[-1][1]
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
    return Head(
        kind="logistic" if task == "classification" else "linear",
        coef=coef,
        intercept=intercept,
        scaler_mean=np.asarray(scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(scaler.scale_, dtype=np.float64),
        **common,
    )


# ------------------------------------------------------------------------------ evaluation
def spatial_blocks(lonlat: np.ndarray, label: np.ndarray, block_size_m: float) -> np.ndarray:
    """Group id per vector: the square block (~``block_size_m``) holding its label.

    All pixels of one label (a polygon) share the label's first pixel's block, so a polygon
    never sits on both sides of a split.
    """
    lat0 = float(np.mean(lonlat[:, 1])) if len(lonlat) else 0.0
    dlat = block_size_m / METERS_PER_DEGREE
    dlon = block_size_m / (METERS_PER_DEGREE * max(math.cos(math.radians(lat0)), 0.01))
    first: dict[int, int] = {}
    for i, lab in enumerate(label.tolist()):
        first.setdefault(lab, i)
    anchor = np.array([first[lab] for lab in label.tolist()], dtype=np.int64)
    bx = np.floor(lonlat[anchor, 0] / dlon).astype(np.int64)
    by = np.floor(lonlat[anchor, 1] / dlat).astype(np.int64)
    _, groups = np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)
    return np.asarray(groups).reshape(-1)


def _splits(task: str, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> dict[str, Any]:
    """The random and the blocked splitters, with the folds each can have."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError(
            "all labels fall in one spatial block: blocked cross-validation needs labels in "
            "at least two blocks (spread them out or lower --block-size)"
        )
    if task == "classification":
        smallest = int(np.bincount(y)[np.unique(y)].min())
        random_folds = max(2, min(folds, smallest))
        random_cv: Any = StratifiedKFold(random_folds, shuffle=True, random_state=seed)
    else:
        random_cv = KFold(max(2, min(folds, len(y))), shuffle=True, random_state=seed)
    return {"random": random_cv, "blocked": GroupKFold(max(2, min(folds, n_groups)))}


def _oof(estimator: Any, x: np.ndarray, y: np.ndarray, cv: Any, groups: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions (every vector predicted by a model that never saw it)."""
    from sklearn.model_selection import cross_val_predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a blocked fold may miss a class: that is the point
        return np.asarray(cross_val_predict(estimator, x, y, cv=cv, groups=groups))


def classification_scores(
    y: np.ndarray, pred: np.ndarray, values: list[int], names: list[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, kappa, per-class P/R/F1 and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=values, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, labels=values, average="macro", zero_division=0)),
        "kappa": float(cohen_kappa_score(y, pred)),
        "per_class": [
            {
                "value": v,
                "name": n,
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for v, n, p, r, f, s in zip(values, names, precision, recall, f1, support, strict=True)
        ],
        "confusion_matrix": {
            "labels": names,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": confusion_matrix(y, pred, labels=values).tolist(),
        },
    }


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """R², RMSE and MAE."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "r2": float(r2_score(y, pred)),
        "rmse": float(math.sqrt(mean_squared_error(y, pred))),
        "mae": float(mean_absolute_error(y, pred)),
    }


def learning_curve(
    options: TrainOptions,
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    cv: Any,
) -> list[dict[str, Any]]:
    """Blocked-CV score against labels per class (classification) or labels (regression).

    Each training fold is subsampled to ``size`` labels per class (deterministic by seed),
    fitted and scored on its untouched test fold.
    """
    rng = np.random.default_rng(options.seed)
    folds = list(cv.split(x, y, groups))
    if task == "classification":
        counts = [np.bincount(y[train])[np.unique(y)] for train, _ in folds]
        biggest = int(min(int(cnt.min()) for cnt in counts))
    else:
        biggest = min(len(train) for train, _ in folds)
    sizes = [s for s in CURVE_SIZES if s < biggest] + [biggest]
    out = []
    for size in sizes:
        scores = []
        for train, test in folds:
            picked = _subsample(rng, y, train, size, task)
            if len(np.unique(y[picked])) < 2 and task == "classification":
                continue
            model = make_estimator(options.kind, task, options.k, options.c, len(picked))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(x[picked], y[picked])
            pred = model.predict(x[test])
            if task == "classification":
                scores.append(float(np.mean(pred == y[test])))
            else:
                scores.append(regression_scores(y[test], pred)["r2"])
        if scores:
            key = "labels_per_class" if task == "classification" else "labels"
            out.append(
                {
                    key: int(size),
                    "score": float(np.mean(scores)),
                    "score_std": float(np.std(scores)),
                    "folds": len(scores),
                }
            )
    return out


def _subsample(
    rng: np.random.Generator, y: np.ndarray, train: np.ndarray, size: int, task: str
) -> np.ndarray:
    if task != "classification":
        return np.sort(rng.choice(train, size=min(size, len(train)), replace=False))
    picked = []
    for value in np.unique(y[train]):
        members = train[y[train] == value]
        picked.append(rng.choice(members, size=min(size, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


# ------------------------------------------------------------------------------ the run
@dataclass(frozen=True)
class _Data:
    labels: Labels
    samples: Samples
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    collection: str
    items: list[CatalogItem]


def _check_options(options: TrainOptions) -> None:
    check_name(options.name)
    if options.kind not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {options.kind!r}")
    if not 1 <= options.k <= 100:
        raise InputError(f"--k must be 1..100, got {options.k}")
    if not (math.isfinite(options.c) and options.c > 0):
        raise InputError(f"--c must be a positive number, got {options.c}")
    if not (math.isfinite(options.block_size_m) and 10 <= options.block_size_m <= 1_000_000):
        raise InputError(f"--block-size must be 10..1000000 m, got {options.block_size_m}")
    if not 2 <= options.folds <= 20:
        raise InputError(f"--folds must be 2..20, got {options.folds}")


def check_replace(store: LocalStore | S3Store, name: str, replace: bool) -> None:
    """Refuse a name already used in ``tessera-models`` unless replacing a head."""
    from tessera_stac.catalog.stac import model_item_key

    key = model_item_key(name)
    if not store.exists(key):
        return
    try:
        existing = json.loads(store.read_bytes(key))
    except ValueError:
        existing = {}
    is_head = c.HEAD_ASSET in (existing.get("assets") or {})
    if not is_head:
        raise InputError(f"model {name!r} exists in {c.MODEL_COLLECTION_ID} and is not a head")
    if not replace:
        raise InputError(f"model {name!r} exists; choose another --name or pass --replace")


def gather(labels_path: Path | str, store: LocalStore | S3Store, options: TrainOptions) -> _Data:
    """Labels and the vectors under them (checked; nothing written)."""
    labels = read_labels(labels_path, options.field, options.task, options.max_labels)
    collection = choose_collection(store, options.collection)
    items = list_items(store, collection, options.year)
    if not items:
        raise InputError(f"{store.uri}: no {collection} items of {options.year}")
    settings = store.settings if isinstance(store, S3Store) else None
    samples = read_label_vectors(
        items, labels.geometries, settings.gdal_env() if settings else None, options.seed
    )
    if len(samples.vectors) == 0:
        raise InputError(
            f"{labels.source}: no label lies on a valid pixel (water, nodata or unprocessed)"
        )
    if labels.task == "classification":
        value_of = {name: i + 1 for i, name in enumerate(labels.classes)}
        y = np.array([value_of[labels.targets[i]] for i in samples.label], dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            only = labels.classes[int(present[0]) - 1]
            raise InputError(
                f"{labels.source}: only class {only!r} lies on valid pixels; a classifier needs "
                "at least two"
            )
        counts = np.bincount(y, minlength=len(labels.classes) + 1)[1:]
        thin = [n for n, k in zip(labels.classes, counts, strict=True) if k < 2]
        if thin:
            raise InputError(
                f"{labels.source}: classes with fewer than 2 labels on valid pixels: "
                f"{', '.join(thin)}"
            )
    else:
        y = np.array([labels.targets[i] for i in samples.label], dtype=np.float64)
    groups = spatial_blocks(samples.lonlat, samples.label, options.block_size_m)
    return _Data(labels, samples, samples.vectors, y, groups, collection, items)


def evaluate(options: TrainOptions, data: _Data) -> dict[str, Any]:
    """Random and blocked cross-validation, per-class scores, learning curve."""
    task = data.labels.task
    splits = _splits(task, data.y, data.groups, options.folds, options.seed)
    out: dict[str, Any] = {}
    for name, cv in splits.items():
        model = make_estimator(options.kind, task, options.k, options.c, len(data.y))
        pred = _oof(model, data.x, data.y, cv, data.groups)
        if task == "classification":
            values = list(range(1, len(data.labels.classes) + 1))
            scores = classification_scores(data.y, pred, values, data.labels.classes)
        else:
            scores = regression_scores(data.y, pred)
        out[name] = {"folds": int(cv.get_n_splits()), **scores}
    out["blocked"]["block_size_m"] = options.block_size_m
    out["blocked"]["blocks"] = len(np.unique(data.groups))
    curve = learning_curve(options, task, data.x, data.y, data.groups, splits["blocked"])
    return {"cross_validation": out, "learning_curve": curve}


def _software() -> dict[str, str]:
    import sklearn

    from tessera_stac.publisher.embeddings.run import software_versions

    return {**software_versions(), "scikit-learn": sklearn.__version__}


def build_report(
    options: TrainOptions, data: _Data, head: Head, scores: dict[str, Any]
) -> dict[str, Any]:
    """The JSON report: inputs, both cross-validations, learning curve, software."""
    samples = data.samples
    return {
        "type": "tessera-head-report",
        "version": 1,
        "name": options.name,
        "kind": head.kind,
        "task": head.task,
        "collection": data.collection,
        "year": options.year,
        "labels": {
            "source": Path(data.labels.source).name,
            "field": data.labels.field,
            "count": len(data.labels),
            "per_class": data.labels.counts(),
            "on_invalid_pixels": len(samples.invalid),
            "polygons": samples.polygons,
            "polygon_pixels": samples.polygon_pixels,
            "vectors": len(data.y),
        },
        "parameters": {
            "k": head.k if head.kind == "knn" else None,
            "c": options.c if head.kind != "knn" else None,
            "folds": options.folds,
            "block_size_m": options.block_size_m,
            "seed": options.seed,
        },
        "classes": [cl.to_dict() for cl in head.classes],
        **scores,
        "embedding_items": samples.items,
        "software": _software(),
    }


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """Model item properties with the headline scores (blocked first)."""
    cv = report["cross_validation"]
    if report["task"] == "classification":
        return {
            c.ACCURACY_PROP: round(cv["blocked"]["accuracy"], 4),
            c.ACCURACY_RANDOM_PROP: round(cv["random"]["accuracy"], 4),
            c.F1_PROP: round(cv["blocked"]["f1_macro"], 4),
        }
    return {
        c.R2_PROP: round(cv["blocked"]["r2"], 4),
        c.R2_RANDOM_PROP: round(cv["random"]["r2"], 4),
    }


def train(
    labels_path: Path | str,
    dest: str,
    options: TrainOptions,
    settings: StorageSettings | None = None,
    now: datetime | None = None,
    colors: dict[str, str] | None = None,
) -> TrainResult:
    """Train a head and publish it in ``tessera-models`` of the catalog at ``dest``.

    Args:
        labels_path: the labels file.
        dest: the published static catalog (folder or ``s3://bucket/prefix``).
        options: what to train.
        settings: S3 settings.
        now: the processing time written in the item (default: now).
        colors: class colours by name (default: a palette).

    Raises:
        InputError: bad labels, options or catalog; nothing is written then.
    """
    from tessera_stac.publisher.classify.report import chart_png
    from tessera_stac.publisher.classify.stac import create_head_item

    _check_options(options)
    store = open_store(dest, settings)
    check_replace(store, options.name, options.replace)
    data = gather(labels_path, store, options)
    task = data.labels.task
    model = make_estimator(options.kind, task, options.k, options.c, len(data.y))
    with one_blas_thread(openmp=True):  # many small fits: threads only contend (heads.py)
        scores = evaluate(options, data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model.fit(data.x, data.y)
    try:
        head = head_from_estimator(
            model,
            name=options.name,
            kind=options.kind,
            task=task,
            collection=data.collection,
            year=options.year,
            classes=data.labels.classes,
            colors=colors,
            x=data.x,
            y=data.y,
        )
    except HeadError as exc:
        raise InputError(f"cannot publish this head: {exc}") from None
    report = build_report(options, data, head, scores)
    head_bytes = head.to_json()
    report_bytes = (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
    png = chart_png(report)
    files = {
        c.HEAD_ASSET: (head_bytes, c.HEAD_MEDIA_TYPE),
        c.REPORT_ASSET: (report_bytes, c.JSON_MEDIA_TYPE),
        c.CHART_ASSET: (png, c.PNG_MEDIA_TYPE),
    }
    checksums = {
        key: (len(data_), multihash(hashlib.sha256(data_).hexdigest()))
        for key, (data_, _) in files.items()
    }
    item = create_head_item(
        head,
        report,
        headline(report),
        data.samples.lonlat,
        [e for e in data.items if e.id in set(data.samples.items)],
        checksums,
        now or datetime.now(UTC),
    )
    return TrainResult(head, report, item, _publish(store, options.name, files, item))


def _publish(
    store: LocalStore | S3Store,
    name: str,
    files: dict[str, tuple[bytes, str]],
    item: dict[str, Any],
) -> list[str]:
    """Write the head's files, its item, the models collection and the root (in that order)."""
    from tessera_stac.catalog.stac import model_item_key
    from tessera_stac.catalog.static import dump_json, put_model_collection

    written = []
    folder = f"{c.MODEL_COLLECTION_ID}/{name}"
    names = {c.HEAD_ASSET: "head.json", c.REPORT_ASSET: "report.json", c.CHART_ASSET: "report.png"}
    for key, (data, media) in files.items():
        store.put_bytes(data, f"{folder}/{names[key]}", media)
        written.append(f"{folder}/{names[key]}")
    key = model_item_key(name)
    store.put_bytes(dump_json(item), key, c.GEOJSON_MEDIA_TYPE)
    written.append(key)
    written.append(put_model_collection(store))
    return written


def load_head(store: LocalStore | S3Store, name: str) -> tuple[Head, dict[str, Any]]:
    """A published head and its model item.

    Raises:
        InputError: no head of that name is published in the store.
    """
    from tessera_stac.catalog.stac import model_item_key

    check_name(name)
    key = model_item_key(name)
    if not store.exists(key) or not store.exists(c.head_key(name)):
        raise InputError(
            f"{store.uri}: no head {name!r} in {c.MODEL_COLLECTION_ID} (classify train first)"
        )
    item = json.loads(store.read_bytes(key))
    return Head.from_json(store.read_bytes(c.head_key(name))), item

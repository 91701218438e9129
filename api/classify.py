"""Heads on the embeddings in the API: class maps as coloured tiles, classification on the fly,
and models trained from labels in a request.

* **Class colours**: a tile of a class item (``assets=classes``, a uint8 COG with
  ``classification:classes``), of a class mosaic, or of ``algorithm=classify`` is drawn in the
  classes' own colours (:func:`class_colormap`, titiler's colormap dependency extended: an
  explicit ``colormap``/``colormap_name`` still wins); class 0 (nodata) is transparent.
  :func:`class_item_links` / :func:`class_collection_links` give the XYZ/TileJSON/WMTS
  web-map-links, so STAC Browser's map and QGIS show the classes.
* ``algorithm=classify&algorithm_params={"model": NAME}`` on ``assets=embeddings&assets=scales``
  (an item or a yearly mosaic): the head applied to the dequantised vectors of every pixel
  (:class:`EmbeddingClassify`, the one shared head function of ``catalog/heads.py``). NAME is a
  published model (the model JSON asset of the ``tessera-models`` item NAME in pgSTAC) or a
  temporary one made by ``POST /classify``; parsed heads are cached (bounded, by checksum).
* ``POST /classify``: labels (lon, lat, class) in the body, bounded in count, classes and
  years: the embeddings at the labels are read through the reader kernel, a head is trained
  with scikit-learn, its accuracy reported (random and spatially blocked cross-validation), and
  the model stored in the database (``public.tessera_temp_models``) under a new ``tmp-`` name, so
  every API worker can draw it at once; temporary models are bounded in number and age and never
  take a published model's name.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from rio_tiler.colormap import cmap
from rio_tiler.models import ImageData
from titiler.core.algorithm.base import BaseAlgorithm
from titiler.core.dependencies import ColorMapParams

from tessera_stac.api.caches import LruCache
from tessera_stac.catalog.constants import (
    CLASSES_ASSET,
    CLASSES_COLLECTION_PREFIX,
    EMBEDDING_DIM,
    HEAD_ASSET,
    MODEL_COLLECTION_ID,
)
from tessera_stac.catalog.errors import InputError

router = APIRouter(tags=["Heads (classification)"])

TEMP_PREFIX = "tmp-"
TEMP_TABLE = "public.tessera_temp_models"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HEAD_CACHE_SIZE = 16
#: tile formats that carry values (no default class colours)
DATA_FORMATS = ("npy", "tif", "tiff")
#: size of the spatial blocks of the blocked cross-validation (degrees, ~5.5 km)
BLOCK_DEGREES = 0.05


# ------------------------------------------------------------------------------ colours
def _rgba(color: str) -> tuple[int, int, int, int]:
    hexa = str(color).lstrip("#")
    if not re.fullmatch(r"[0-9A-Fa-f]{6}", hexa):
        hexa = "808080"
    return int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16), 255


def classes_colormap(classes: Sequence[dict[str, Any]]) -> dict[int, tuple[int, int, int, int]]:
    """``{value: (r, g, b, 255)}`` of ``classification:classes`` entries (``color_hint``) or
    head classes (``color``); 0 transparent."""
    out: dict[int, tuple[int, int, int, int]] = {0: (0, 0, 0, 0)}
    for entry in classes:
        value = int(entry["value"])
        if 0 < value < 256 and not entry.get("nodata"):
            out[value] = _rgba(str(entry.get("color_hint") or entry.get("color") or ""))
    return out


def is_class_item(item: dict[str, Any]) -> bool:
    """A class map item: a ``classes`` asset with ``classification:classes``."""
    asset = (item.get("assets") or {}).get(CLASSES_ASSET) or {}
    return bool(asset.get("classification:classes"))


def _asset_classes(item: Any) -> list[dict[str, Any]]:
    asset = item.assets.get(CLASSES_ASSET) if hasattr(item, "assets") else None
    if asset is None:
        return []
    found: list[dict[str, Any]] = list(asset.extra_fields.get("classification:classes") or [])
    return found


def _mosaic_classes(request: Request, collection_id: str) -> list[dict[str, Any]]:
    """The classes of a class collection: its ``item_assets`` or one of its items."""
    from tessera_stac.api.tiles import _pool, stac_item

    key = ("mosaic-classes", id(_pool(request)), collection_id)
    hit = _HEADS.get_meta(key)
    if hit is not None:
        return list(hit)
    with _pool(request).connection() as conn:
        row = conn.execute(
            "SELECT coalesce(content -> 'item_assets' -> %s -> 'classification:classes', "
            "content -> 'summaries' -> 'classification:classes'), "
            "(SELECT id FROM pgstac.items WHERE collection = %s LIMIT 1) "
            "FROM pgstac.collections WHERE id = %s",
            (CLASSES_ASSET, collection_id, collection_id),
        ).fetchone()
    classes: list[dict[str, Any]] = []
    if row and row[0]:
        classes = list(row[0])
    elif row and row[1]:
        classes = _asset_classes(stac_item(request, collection_id, str(row[1])))
    _HEADS.put_meta(key, classes)
    return classes


def _wants_classes(request: Request) -> bool:
    assets = request.query_params.getlist("assets")
    return any(a.split("|", 1)[0] == CLASSES_ASSET for a in assets)


def class_colormap(
    request: Request = None,  # type: ignore[assignment]  # None in titiler's WMTS layer check
    colormap_name: Annotated[
        Literal[tuple(cmap.list())] | None,  # type: ignore[valid-type]
        Query(description="Colormap name"),
    ] = None,
    colormap: Annotated[
        str | None,
        Query(description="JSON encoded custom colormap (default: the classes' own colours)"),
    ] = None,
) -> Any:
    """titiler's colormap dependency; without one, class layers get their classes' colours."""
    explicit = ColorMapParams(colormap_name=colormap_name, colormap=colormap)
    if explicit is not None or request is None:
        return explicit
    params = request.path_params
    if str(params.get("format", "")).lower() in DATA_FORMATS:
        return None  # data, not a picture: the class values themselves
    if request.query_params.get("algorithm") == "classify":
        name = _model_param(request.query_params.get("algorithm_params"))
        head = get_head(request, name)
        if head.task != "classification":
            return None
        return classes_colormap([c.to_dict() for c in head.classes])
    if not _wants_classes(request) or "collection_id" not in params:
        return None
    from tessera_stac.api.tiles import stac_item

    if "item_id" in params:
        classes = _asset_classes(stac_item(request, params["collection_id"], params["item_id"]))
    else:
        classes = _mosaic_classes(request, params["collection_id"])
    return classes_colormap(classes) if classes else None


# --------------------------------------------------------------------------- map links
def class_item_links(item: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """web-map-links of a class item: its classes in their colours (empty for other items)."""
    from urllib.parse import urlencode

    from tessera_stac.api.tiles import PREFIX, TMS, _links

    if not is_class_item(item):
        return []
    cid, iid = str(item.get("collection")), str(item.get("id"))
    root = f"{base.rstrip('/')}{PREFIX}/collections/{cid}/items/{iid}"
    query = urlencode([("assets", CLASSES_ASSET)])
    urls = {
        "xyz": f"{root}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png?{query}",
        "tilejson": f"{root}/{TMS}/tilejson.json?{query}",
        "wmts": f"{root}/WMTSCapabilities.xml?{query}",
    }
    title = str(item["assets"][CLASSES_ASSET].get("title") or "Classes")
    return _links([(f"{title} (class colours)", urls)], iid)


def class_mosaic_urls(base: str, collection_id: str, year: int) -> dict[str, str]:
    """XYZ/TileJSON/WMTS of the mosaic of a class collection's maps of ``year``."""
    from urllib.parse import urlencode

    from tessera_stac.api.tiles import PREFIX, TMS

    root = f"{base.rstrip('/')}{PREFIX}/collections/{collection_id}/years/{year}"
    query = urlencode([("assets", CLASSES_ASSET)])
    return {
        "xyz": f"{root}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png?{query}",
        "tilejson": f"{root}/{TMS}/tilejson.json?{query}",
        "wmts": f"{root}/WMTSCapabilities.xml?{query}",
    }


def classify_urls(base: str, collection_id: str, year: int, model: str) -> dict[str, str]:
    """XYZ/TileJSON/WMTS of a head applied on the fly to an embedding mosaic of ``year``."""
    from urllib.parse import urlencode

    from tessera_stac.api.tiles import PREFIX, TMS, VECTOR_ASSETS

    root = f"{base.rstrip('/')}{PREFIX}/collections/{collection_id}/years/{year}"
    params = json.dumps({"model": model}, separators=(",", ":"))
    query = urlencode([*VECTOR_ASSETS, ("algorithm", "classify"), ("algorithm_params", params)])
    return {
        "xyz": f"{root}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png?{query}",
        "tilejson": f"{root}/{TMS}/tilejson.json?{query}",
        "wmts": f"{root}/WMTSCapabilities.xml?{query}",
    }


def class_collection_links(collection: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """web-map-links of a class collection: the mosaic of each year of its extent."""
    from tessera_stac.api.tiles import MOSAIC_LAYER, _links

    cid = str(collection.get("id", ""))
    if not cid.startswith(CLASSES_COLLECTION_PREFIX):
        return []
    interval = ((collection.get("extent") or {}).get("temporal") or {}).get("interval") or []
    if not interval or not interval[0] or not interval[0][0]:
        return []
    start, end = interval[0][0], interval[0][1] or interval[0][0]
    years = list(range(int(str(end)[:4]), int(str(start)[:4]) - 1, -1))[:10]
    urls = [(f"Classes, {year}", class_mosaic_urls(base, cid, year)) for year in years]
    return _links(urls, MOSAIC_LAYER)


# ------------------------------------------------------------------------------ models
class _HeadCache:
    """Parsed heads keyed by (name, checksum) and small lookups; LRU, thread-safe."""

    def __init__(self, size: int = HEAD_CACHE_SIZE) -> None:
        self.heads = LruCache(size)
        self.meta: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        return self.heads.get(key)

    def put(self, key: tuple[Any, ...], head: Any) -> None:
        self.heads.put(key, head)

    def get_meta(self, key: tuple[Any, ...], seconds: float = 60.0) -> Any:
        with self.lock:
            hit = self.meta.get(key)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < seconds else None

    def put_meta(self, key: tuple[Any, ...], value: Any) -> None:
        with self.lock:
            if len(self.meta) > 10_000:
                self.meta.clear()
            self.meta[key] = (time.monotonic(), value)


_HEADS = _HeadCache()


def check_name(name: Any) -> str:
    """A model name as a parameter: a published name or a ``tmp-`` one (400 otherwise)."""
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise HTTPException(
            400,
            f"model {str(name)[:80]!r}: a model name is 1-63 lowercase letters, digits, '-' or '_'",
        )
    return name


def _model_param(raw: str | None) -> str:
    try:
        params = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise HTTPException(400, "algorithm_params is not JSON") from exc
    if not isinstance(params, dict) or "model" not in params:
        raise HTTPException(400, 'classify needs algorithm_params {"model": NAME}')
    return check_name(params["model"])


def _settings(request: Request) -> Any:
    return request.app.state.api_settings


def _model_asset(item: dict[str, Any]) -> dict[str, Any]:
    """The head JSON asset of a models item (key ``head``, else a JSON asset with an
    ``mlm:model`` role)."""
    assets = item.get("assets") or {}
    if HEAD_ASSET in assets:
        return dict(assets[HEAD_ASSET])
    for asset in assets.values():
        roles = asset.get("roles") or []
        if "mlm:model" in roles and "json" in str(asset.get("type", "")):
            return dict(asset)
    raise HTTPException(502, f"model item {item.get('id')!r} has no model JSON asset")


def _parse_head(raw: bytes | str | dict[str, Any], what: str) -> Any:
    from tessera_stac.catalog.heads import Head

    try:
        return Head.from_json(raw) if isinstance(raw, bytes | str) else Head.from_dict(raw)
    except (InputError, ValueError, KeyError, TypeError) as exc:
        raise HTTPException(502, f"{what}: not a usable head ({exc})") from exc


def _temp_head(request: Request, name: str) -> Any:
    from tessera_stac.api.tiles import _pool

    seconds = _settings(request).classify_temp_model_seconds
    with _pool(request).connection() as conn:
        try:
            row = conn.execute(
                f"SELECT model FROM {TEMP_TABLE} WHERE name = %s "
                "AND created > now() - make_interval(secs => %s)",
                (name, seconds),
            ).fetchone()
        except Exception as exc:  # the table does not exist yet: no temporary model at all
            if "does not exist" in str(exc):
                row = None
            else:
                raise
    if row is None:
        raise HTTPException(
            404, f"no temporary model {name!r} (expired after {seconds:.0f} s, or never made)"
        )
    return _parse_head(row[0] if isinstance(row[0], dict) else str(row[0]), name)


def _published_head(request: Request, name: str) -> Any:
    from tessera_stac.api.tiles import stac_item
    from tessera_stac.api.watersheds import _read_bytes

    try:
        item = stac_item(request, MODEL_COLLECTION_ID, name).to_dict(transform_hrefs=False)
    except HTTPException as exc:
        raise HTTPException(404, f"no published model {name!r} in {MODEL_COLLECTION_ID}") from exc
    except Exception as exc:  # titiler-pgstac raises its own not-found error
        raise HTTPException(404, f"no published model {name!r} in {MODEL_COLLECTION_ID}") from exc
    asset = _model_asset(item)
    href = str(asset["href"])
    key = ("published", name, href, str(asset.get("file:checksum", "")))
    head = _HEADS.get(key)
    if head is not None:
        return head
    size = asset.get("file:size")
    limit = _settings(request).classify_max_model_bytes
    if isinstance(size, int) and size > limit:
        raise HTTPException(
            413,
            f"model {name!r} is {size} bytes; at most {limit} "
            "(TESSERA_STAC_API_CLASSIFY_MAX_MODEL_BYTES)",
        )
    try:
        raw = _read_bytes(href, _settings(request).data_dir)
    except OSError as exc:
        raise HTTPException(502, f"cannot read model {name!r} at {href}: {exc}") from exc
    if len(raw) > limit:
        raise HTTPException(
            413,
            f"model {name!r} is {len(raw)} bytes; at most {limit} "
            "(TESSERA_STAC_API_CLASSIFY_MAX_MODEL_BYTES)",
        )
    head = _parse_head(raw, f"model {name!r}")
    _HEADS.put(key, head)
    return head


def get_head(request: Request, name: str) -> Any:
    """The head called ``name``: published (the ``tessera-models`` item's head JSON) or else
    temporary (``tmp-``, from the database): a published name always wins. Cached, bounded;
    404 when unknown."""
    check_name(name)
    if not name.startswith(TEMP_PREFIX):
        return _published_head(request, name)
    known = _HEADS.get_meta(("published", name), 30.0)
    if known is None:
        try:
            head = _published_head(request, name)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            _HEADS.put_meta(("published", name), False)
        else:
            _HEADS.put_meta(("published", name), True)
            return head
    elif known:
        return _published_head(request, name)
    key = ("temp", name)
    head = _HEADS.get(key)
    if head is None:
        head = _temp_head(request, name)
        _HEADS.put(key, head)
    elif _HEADS.get_meta(("alive", name), 30.0) is None:  # not expired? (checked every 30 s)
        _temp_head(request, name)
        _HEADS.put_meta(("alive", name), True)
    return head


# -------------------------------------------------------------------------- algorithm
class EmbeddingClassify(BaseAlgorithm):
    """A head applied to every dequantised vector: classes (uint8, 0 = nodata) or a value."""

    title: str = "Classes of a head"
    description: str = "A trained head (catalog/heads.py) on the dequantised vectors."
    input_nbands: int = EMBEDDING_DIM + 1
    output_nbands: int = 1
    output_dtype: str = "uint8"
    head: Any = None

    def __call__(self, img: ImageData) -> ImageData:
        """Predict per pixel."""
        from tessera_stac.api.tiles import _image, dequantised

        values, valid = dequantised(img)
        out = self.head.predict(values, valid)
        first = out[0] if isinstance(out, tuple) else out
        if self.head.task == "classification":
            classes = np.asarray(first, dtype=np.uint8)
            return _image(img, classes[None], classes > 0, ["class"])
        value = np.asarray(first, dtype=np.float32)
        ok = np.isfinite(value) & valid
        return _image(img, np.where(ok, value, 0).astype(np.float32)[None], ok, ["value"])


def classify_algorithm(request: Request, params: dict[str, Any]) -> EmbeddingClassify:
    """The algorithm of ``algorithm=classify`` (the head named in ``algorithm_params``)."""
    if "model" not in params:
        raise HTTPException(400, 'classify needs algorithm_params {"model": NAME}')
    head = get_head(request, check_name(params["model"]))
    dtype = "uint8" if head.task == "classification" else "float32"
    return EmbeddingClassify(head=head, output_dtype=dtype)


# ------------------------------------------------------------------------ POST /classify
class Label(BaseModel):
    """One label: a point and its class (or, for regression, a number)."""

    lon: float = Field(ge=-180, le=180, description="Longitude (WGS84)")
    lat: float = Field(ge=-90, le=90, description="Latitude (WGS84)")
    label: str | float = Field(
        alias="class", description="Class name (a number trains a regression head)"
    )


class ClassSpec(BaseModel):
    """Optional colour of a class."""

    name: str
    color: str = Field(pattern=r"^#[0-9A-Fa-f]{6}$")


class ClassifyRequest(BaseModel):
    """Labels to train a temporary head on."""

    year: int = Field(ge=1900, le=2200, description="Year of the embeddings to train on")
    collection: str | None = Field(None, description="Embedding collection (when several)")
    kind: Literal["logistic", "knn"] = Field("logistic", description="Linear probe or k-NN")
    k: int = Field(5, ge=1, le=50, description="Neighbours (kind knn)")
    labels: list[Label] = Field(description="Points with a class")
    classes: list[ClassSpec] = Field(default_factory=list, description="Class colours")
    drop_invalid: bool = Field(
        False, description="Leave out labels without a valid embedding instead of refusing"
    )


def check_labels(body: ClassifyRequest, settings: Any) -> tuple[list[str], str]:
    """Bounds of a training request, before anything is read: (class names, task).

    Raises:
        HTTPException: 413 too many labels; 400 one class, too many classes, bad names.
    """
    from tessera_stac.api import budget

    budget.check(
        len(body.labels),
        settings.classify_max_labels,
        "TESSERA_STAC_API_CLASSIFY_MAX_LABELS",
        "labels in one POST /classify",
    )
    if len(body.labels) < 4:
        raise HTTPException(400, f"{len(body.labels)} labels: at least 4 are needed")
    kinds = {isinstance(lab.label, str) for lab in body.labels}
    if len(kinds) > 1:
        raise HTTPException(400, "labels mix class names and numbers")
    if kinds == {False}:
        values = [float(lab.label) for lab in body.labels]
        if not all(math.isfinite(v) for v in values):
            raise HTTPException(400, "regression labels must be finite numbers")
        return [], "regression"
    names = sorted({str(lab.label) for lab in body.labels})
    from tessera_stac.catalog.heads import check_class_name

    for name in names:
        try:
            check_class_name(name)
        except InputError as exc:
            raise HTTPException(400, str(exc)) from exc
    if len(names) < 2:
        raise HTTPException(400, f"one class only ({names[0]!r}): a head needs at least two")
    max_classes = settings.classify_max_classes
    if len(names) > max_classes:
        raise HTTPException(
            400,
            f"{len(names)} classes; at most {max_classes} (TESSERA_STAC_API_CLASSIFY_MAX_CLASSES)",
        )
    unknown = {c.name for c in body.classes} - set(names)
    if unknown:
        raise HTTPException(400, f"colours for classes without labels: {sorted(unknown)[:5]}")
    return names, "classification"


def _metrics(y: np.ndarray, pred: np.ndarray, n: int) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y, pred, labels=list(range(n)), zero_division=0)
    return {
        "accuracy": float(np.mean(y == pred)),
        "precision": [round(float(v), 4) for v in p],
        "recall": [round(float(v), 4) for v in r],
        "f1": [round(float(v), 4) for v in f],
        "support": [int(v) for v in s],
        "confusion": confusion_matrix(y, pred, labels=list(range(n))).tolist(),
    }


def _estimator(kind: str, k: int, task: str) -> Any:
    if task == "regression":
        from sklearn.linear_model import Ridge
        from sklearn.neighbors import KNeighborsRegressor

        return KNeighborsRegressor(n_neighbors=k) if kind == "knn" else Ridge(alpha=1.0)
    if kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=k)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000)


def cross_validate(
    x: np.ndarray, y: np.ndarray, lons: np.ndarray, lats: np.ndarray, kind: str, k: int, task: str
) -> dict[str, Any]:
    """Random (stratified) and spatially blocked (``BLOCK_DEGREES`` blocks) cross-validation."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, cross_val_predict

    out: dict[str, Any] = {}
    n = int(y.max()) + 1 if task == "classification" else 0
    smallest = int(np.bincount(y).min()) if task == "classification" else len(y)
    folds = min(5, smallest)
    blocks = np.floor(lons / BLOCK_DEGREES).astype(np.int64) * 100_000 + np.floor(
        lats / BLOCK_DEGREES
    ).astype(np.int64)
    nblocks = len(np.unique(blocks))

    def score(pred: np.ndarray) -> dict[str, Any]:
        if task == "classification":
            return _metrics(y, pred, n)
        err = pred - y
        return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}

    if folds >= 2:
        splitter = (
            StratifiedKFold(folds, shuffle=True, random_state=0)
            if task == "classification"
            else KFold(folds, shuffle=True, random_state=0)
        )
        effective_k = min(k, max(1, len(y) - len(y) // folds - 1))
        est = _estimator(kind, effective_k, task)
        out["random"] = {"folds": folds, **score(cross_val_predict(est, x, y, cv=splitter))}
    else:
        out["random"] = {"skipped": "a class has fewer than 2 labels"}
    bfolds = min(5, nblocks)
    if bfolds >= 2:
        try:
            est = _estimator(kind, min(k, max(1, len(y) - len(y) // bfolds - 1)), task)
            pred = cross_val_predict(est, x, y, cv=GroupKFold(bfolds), groups=blocks)
            out["spatial"] = {
                "folds": bfolds,
                "block_degrees": BLOCK_DEGREES,
                "blocks": nblocks,
                **score(pred),
            }
        except ValueError as exc:  # a training fold without some class
            out["spatial"] = {"skipped": f"blocked folds unusable: {exc}"}
    else:
        out["spatial"] = {
            "skipped": f"labels lie in {nblocks} block of {BLOCK_DEGREES}°: no blocked split"
        }
    return out


def head_dict(
    name: str,
    est: Any,
    kind: str,
    task: str,
    classes: list[dict[str, Any]],
    collection: str,
    year: int,
    x: np.ndarray,
    y: np.ndarray,
    k: int,
) -> dict[str, Any]:
    """The plain-JSON head of a fitted estimator (the ``catalog/heads.py`` format)."""
    model: dict[str, Any] = {
        "type": "tessera-head",
        "version": 1,
        "name": name,
        "kind": "linear" if task == "regression" and kind != "knn" else kind,
        "task": task,
        "collection": collection,
        "year": year,
        "classes": classes,
    }
    if kind == "knn":
        labels: list[Any] = (
            [int(classes[int(i)]["value"]) for i in y]
            if task == "classification"
            else [float(v) for v in y]
        )
        model.update(vectors=x.astype(np.float32).tolist(), labels=labels, k=int(k))
        return model
    coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64))
    model.update(coef=coef.tolist(), intercept=intercept.tolist())
    return model


def train(
    body: ClassifyRequest,
    names: list[str],
    task: str,
    x: np.ndarray,
    lons: np.ndarray,
    lats: np.ndarray,
    raw: list[str | float],
    collection: str,
    name: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the head on all labels and cross-validate it; (model dict, report)."""
    colours = {c.name: c.color for c in body.classes}
    if task == "classification":
        index = {n: i for i, n in enumerate(names)}
        y = np.array([index[str(v)] for v in raw], dtype=np.int64)
        present = np.bincount(y, minlength=len(names))
        if (present == 0).any() or len(names) < 2:
            missing = [n for n, c in zip(names, present, strict=True) if c == 0]
            raise HTTPException(422, f"no label with a valid embedding for classes {missing}")
        from tessera_stac.catalog.heads import make_classes

        classes = [c.to_dict() for c in make_classes(names, colours)]
        k = min(body.k, len(y))
    else:
        y = np.asarray(raw, dtype=np.float64)
        classes, k = [], body.k
    report: dict[str, Any] = {
        "task": task,
        "kind": body.kind,
        "labels": len(y),
        "classes": [{**c, "count": int(np.sum(y == i))} for i, c in enumerate(classes)],
        "cross_validation": cross_validate(x, y, lons, lats, body.kind, k, task),
    }
    est = _estimator(body.kind, k, task).fit(x, y)
    model = head_dict(name, est, body.kind, task, classes, collection, body.year, x, y, k)
    _parse_head(model, f"the head trained for {name}")  # the published format, checked
    return model, report


def _train_one_thread(*args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`train` with BLAS and OpenMP at one thread (its dozens of small fits only contend
    with more; ``catalog.heads.one_blas_thread``)."""
    from tessera_stac.catalog.heads import one_blas_thread

    with one_blas_thread(openmp=True):
        return train(*args)


async def _ensure_table(conn: Any) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tessera_temp_models'))")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TEMP_TABLE} ("
            "name text PRIMARY KEY, created timestamptz NOT NULL DEFAULT now(), "
            "model jsonb NOT NULL, report jsonb NOT NULL)"
        )


async def store_temp_model(
    request: Request, name: str, model: dict[str, Any], report: dict[str, Any]
) -> None:
    """Insert a temporary model; expired ones are dropped first and the oldest beyond the
    bound (``classify_max_temp_models``)."""
    settings = _settings(request)
    async with request.app.state.get_connection(request, "r") as conn:
        await _ensure_table(conn)
        async with conn.transaction():
            await conn.execute(
                f"DELETE FROM {TEMP_TABLE} WHERE created < now() - make_interval(secs => $1)",
                float(settings.classify_temp_model_seconds),
            )
            await conn.execute(
                f"DELETE FROM {TEMP_TABLE} WHERE name IN (SELECT name FROM {TEMP_TABLE} "
                "ORDER BY created DESC OFFSET $1)",
                max(0, settings.classify_max_temp_models - 1),
            )
            await conn.execute(
                f"INSERT INTO {TEMP_TABLE} (name, model, report) "
                "VALUES ($1, $2::text::jsonb, $3::text::jsonb)",
                name,
                json.dumps(model),
                json.dumps(report),
            )


async def _published_exists(request: Request, name: str) -> bool:
    async with request.app.state.get_connection(request, "r") as conn:
        found = await conn.fetchval(
            "SELECT 1 FROM pgstac.items WHERE collection = $1 AND id = $2",
            MODEL_COLLECTION_ID,
            name,
        )
    return found is not None


@router.post(
    "/classify",
    status_code=201,
    summary="Train a temporary head on labels: accuracy report and a model for tiles",
    responses={
        400: {"description": "Bad labels (one class, names, counts)"},
        413: {"description": "Too many labels"},
        422: {"description": "Labels without a valid embedding"},
    },
)
async def post_classify(request: Request, body: ClassifyRequest) -> dict[str, Any]:
    """Read the embeddings at the labels (``year``), train a head (scikit-learn: multinomial
    logistic regression or k-NN), cross-validate it (random and spatially blocked folds) and
    store it as a temporary model: its ``tmp-`` name works at once in
    ``algorithm=classify&algorithm_params={"model": NAME}`` on any API worker."""
    from stac_fastapi.types.requests import get_base_url

    from tessera_stac.api.embeddings import Point, embedding_collections, positions
    from tessera_stac.api.readers import ReadError

    settings = _settings(request)
    names, task = check_labels(body, settings)
    points = [Point(lon=lab.lon, lat=lab.lat) for lab in body.labels]
    try:
        await embedding_collections(request, body.collection)
        results = await positions(request, points, body.year, body.collection)
    except ReadError as exc:
        raise HTTPException(exc.status, exc.description) from exc
    good = [i for i, (_, vector) in enumerate(results) if vector is not None]
    bad = [i for i, (_, vector) in enumerate(results) if vector is None]
    if bad and not body.drop_invalid:
        first = results[bad[0]][0]
        reason = first.get("error", {}).get("description", "no value")
        raise HTTPException(
            422,
            f"{len(bad)} of {len(results)} labels have no valid embedding in {body.year} "
            f"(label {bad[0]}: {reason}); move them or pass drop_invalid",
        )
    if len(good) < 4:
        raise HTTPException(422, f"{len(good)} labels with a valid embedding: at least 4 needed")
    collections = {str(results[i][0]["collection"]) for i in good}
    if len(collections) > 1:
        raise HTTPException(422, f"labels fall in several collections: {sorted(collections)}")
    collection = collections.pop()
    x = np.vstack([np.asarray(results[i][1], dtype=np.float32) for i in good])
    lons = np.array([body.labels[i].lon for i in good])
    lats = np.array([body.labels[i].lat for i in good])
    raw = [body.labels[i].label for i in good]
    name = f"{TEMP_PREFIX}{secrets.token_hex(6)}"
    while await _published_exists(request, name):  # never shadow a published model
        name = f"{TEMP_PREFIX}{secrets.token_hex(6)}"
    model, report = await run_in_threadpool(
        _train_one_thread, body, names, task, x, lons, lats, raw, collection, name
    )
    report["dropped"] = bad
    await store_temp_model(request, name, model, report)
    base = get_base_url(request)
    return {
        "model": name,
        "task": task,
        "collection": collection,
        "year": body.year,
        "expires_in_seconds": settings.classify_temp_model_seconds,
        "classes": model["classes"],
        "report": report,
        "tiles": classify_urls(base, collection, body.year, name),
    }


@router.get(
    "/classify/{name}",
    summary="A temporary head: its model JSON and accuracy report",
    responses={404: {"description": "Unknown or expired"}},
)
async def get_classify(request: Request, name: str) -> dict[str, Any]:
    """The model and report of a temporary head made by ``POST /classify``."""
    check_name(name)
    if not name.startswith(TEMP_PREFIX):
        raise HTTPException(404, f"{name!r} is not a temporary model (published models are items "
                            f"of {MODEL_COLLECTION_ID})")  # fmt: skip
    seconds = _settings(request).classify_temp_model_seconds
    async with request.app.state.get_connection(request, "r") as conn:
        try:
            row = await conn.fetchrow(
                f"SELECT model::text AS model, report::text AS report, created FROM {TEMP_TABLE} "
                "WHERE name = $1 AND created > now() - make_interval(secs => $2)",
                name,
                float(seconds),
            )
        except Exception as exc:
            if "does not exist" not in str(exc):
                raise
            row = None
    if row is None:
        raise HTTPException(404, f"no temporary model {name!r} (expired or never made)")
    return {
        "model": json.loads(row["model"]),
        "report": json.loads(row["report"]),
        "created": row["created"].isoformat(),
    }

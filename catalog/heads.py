"""Small task heads on dequantised embeddings, as plain data, applied by one numpy function.

A head is what a planner trains on a few labelled points to turn 128-number vectors into an
answer: a land-cover class per pixel (multinomial logistic regression, the linear probe, or
k-NN) or a value (ridge regression or k-NN regression). scikit-learn does the fitting
(``publisher/classify/train.py``); what is published is its plain parameters as JSON, never a
pickle, and :meth:`Head.predict` applies them. The tiler's algorithm, the map pipeline and the
API all call that one function, so a map, a tile and an API answer agree pixel for pixel.

The JSON document (``type`` ``tessera-head``, ``version`` 1)::

    {"type": "tessera-head", "version": 1, "name": "landcover",
     "kind": "logistic" | "knn" | "linear", "task": "classification" | "regression",
     "collection": "tessera-embeddings-v1", "year": 2024,
     "classes": [{"value": 1, "name": "cropland", "color": "#e8c547"}, ...],   # classification
     "coef": [[...128...], ...], "intercept": [...],                          # logistic, linear
     "vectors": "<base64 little-endian float32>" | [[...128...], ...],         # knn
     "labels": [1, 2, ...] | [3.5, ...], "k": 5,                               # knn
     "scaler": {"mean": [...128...], "scale": [...128...]}}                    # optional

``kind`` ``logistic`` is a classifier (one row of ``coef`` per class, softmax; or one row for
two classes, the logistic function, as scikit-learn stores binary problems); ``linear`` is a
regression (one row); ``knn`` keeps the training vectors and their labels (class values or
numbers), Euclidean distance, uniform weights, like scikit-learn's defaults. ``scaler`` (a
``StandardScaler``) is applied to the vectors before anything else.

Everything from outside is validated strictly: sizes, names (no markup, safe as a path and an
id), finite numbers; a bad document raises :class:`HeadError` (an ``InputError``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, Literal

import numpy as np

from tessera_stac.catalog.constants import EMBEDDING_DIM
from tessera_stac.catalog.errors import InputError

HEAD_TYPE = "tessera-head"
HEAD_VERSION = 1
KINDS = ("logistic", "knn", "linear")
TASKS = ("classification", "regression")
#: class values are uint8 codes of the class COG; 0 is its nodata, 255 is kept free
CLASS_NODATA = 0
MAX_CLASS_VALUE = 254
MAX_CLASSES = 254
#: training vectors a k-NN head may carry (its JSON is ~700 bytes per vector in base64)
MAX_VECTORS = 20_000
MAX_K = 100
#: pixels per chunk in :meth:`Head.predict` (bounds the k-NN distance matrix)
PREDICT_CHUNK = 8192

#: a head's name: its model item id, the suffix of ``tessera-classes-{name}``, a folder name
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: a class name: letters, digits, space, ``_``, ``-``; no markup, no path or CSV separators
CLASS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,47}$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: names that would collide with the TESSERA model items of ``tessera-models``
RESERVED_PREFIXES = ("tessera-",)

#: colours given to classes without one (ColorBrewer Set1/Dark2, readable on a map)
PALETTE = (
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#377eb8",
    "#e41a1c",
    "#4daf4a",
    "#984ea3",
    "#ff7f00",
)

Kind = Literal["logistic", "knn", "linear"]
Task = Literal["classification", "regression"]

_KEYS = {
    "type",
    "version",
    "name",
    "kind",
    "task",
    "collection",
    "year",
    "classes",
    "coef",
    "intercept",
    "vectors",
    "labels",
    "k",
    "scaler",
}


class HeadError(InputError):
    """A head document (or the arguments to build one) is invalid; the message says where."""


def check_name(name: object, what: str = "model name") -> str:
    """A head name safe as an item id, a collection suffix and a folder (else HeadError)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise HeadError(
            f"{what} {str(name)[:80]!r} must be 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    if name.startswith(RESERVED_PREFIXES):
        raise HeadError(f"{what} {name!r} is reserved (names starting 'tessera-' are models')")
    return name


def check_class_name(name: object) -> str:
    """A class name without markup or separators (else HeadError)."""
    if not isinstance(name, str) or not CLASS_NAME_RE.match(name):
        raise HeadError(
            f"class name {str(name)[:80]!r} must be 1-48 letters, digits, spaces, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def class_slug(name: str) -> str:
    """A class name as a column/key fragment: lowercase, spaces and '-' as '_'."""
    return re.sub(r"[ -]+", "_", name.strip()).lower()


@dataclass(frozen=True)
class HeadClass:
    """One class of a classification head: its code in the class COG, name and colour."""

    value: int
    name: str
    color: str

    @classmethod
    def from_dict(cls, d: object) -> HeadClass:
        if not isinstance(d, Mapping) or set(d) - {"value", "name", "color"}:
            raise HeadError("each class must be an object with value, name and color")
        value = d.get("value")
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 254:
            raise HeadError(f"class value {value!r} must be an integer 1..{MAX_CLASS_VALUE}")
        color = d.get("color")
        if not isinstance(color, str) or not COLOR_RE.match(color):
            raise HeadError(f"class color {str(color)[:20]!r} must be #rrggbb")
        return cls(value, check_class_name(d.get("name")), color.lower())

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "color": self.color}

    def rgba(self) -> tuple[int, int, int, int]:
        """The colour as an (r, g, b, 255) tuple (colormaps)."""
        c = self.color
        return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16), 255


def make_classes(names: Sequence[str], colors: Mapping[str, str] | None = None) -> list[HeadClass]:
    """Classes for sorted distinct ``names``: values 1..n in that order, palette colours."""
    if len(names) > MAX_CLASSES:
        raise HeadError(f"{len(names)} classes; at most {MAX_CLASSES}")
    if len(set(names)) != len(names):
        raise HeadError("class names must be distinct")
    out = []
    for i, name in enumerate(names):
        color = (colors or {}).get(name, PALETTE[i % len(PALETTE)])
        out.append(HeadClass.from_dict({"value": i + 1, "name": name, "color": color}))
    return out


def _floats(obj: object, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """A finite float64 array of ``shape`` (None = any length) from JSON lists."""
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HeadError(f"{what} must be numbers: {exc}") from None
    if arr.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)
    ):
        raise HeadError(f"{what} has shape {arr.shape}; expected {shape}")
    if isinstance(obj, list) and _has_bool(obj):
        raise HeadError(f"{what} must be numbers, not booleans")
    if not np.isfinite(arr).all():
        raise HeadError(f"{what} must be finite numbers")
    return arr


def _has_bool(obj: list[Any]) -> bool:
    first: Any = obj
    while isinstance(first, list) and first:
        first = first[0]
    return isinstance(first, bool)


def _vectors(obj: object, n: int) -> np.ndarray:
    """k-NN training vectors from base64 (little-endian float32) or nested lists."""
    if isinstance(obj, str):
        if len(obj) > (MAX_VECTORS * EMBEDDING_DIM * 4) * 4 // 3 + 8:
            raise HeadError(f"vectors: more than {MAX_VECTORS} vectors")
        try:
            raw = base64.b64decode(obj, validate=True)
        except (binascii.Error, ValueError):
            raise HeadError("vectors: not valid base64") from None
        if len(raw) != n * EMBEDDING_DIM * 4:
            raise HeadError(
                f"vectors: {len(raw)} bytes; expected {n} x {EMBEDDING_DIM} float32 "
                f"({n * EMBEDDING_DIM * 4} bytes)"
            )
        arr = np.frombuffer(raw, dtype="<f4").reshape(n, EMBEDDING_DIM).astype(np.float32)
        if not np.isfinite(arr).all():
            raise HeadError("vectors must be finite numbers")
        return arr
    return _floats(obj, (n, EMBEDDING_DIM), "vectors").astype(np.float32)


@dataclass(frozen=True, eq=False)
class Head:
    """A trained head: plain parameters and the function that applies them.

    Attributes:
        name: the head's name (model item id; ``tessera-classes-{name}``).
        kind: ``logistic`` (classifier), ``linear`` (regression) or ``knn`` (either).
        task: ``classification`` or ``regression``.
        collection: the embedding collection it was trained on (it maps any year of it).
        year: the year its labels were read from.
        classes: the classes, sorted by value (classification; empty for regression).
        coef: (rows, 128) weights (``logistic``: one row per class, or one for two classes;
            ``linear``: one row).
        intercept: (rows,) biases.
        vectors: (n, 128) float32 training vectors (``knn``).
        labels: (n,) class values (int) or numbers (``knn``).
        k: neighbours (``knn``).
        scaler_mean, scaler_scale: (128,) standardisation applied first, or None.
    """

    name: str
    kind: Kind
    task: Task
    collection: str
    year: int
    classes: tuple[HeadClass, ...] = ()
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    vectors: np.ndarray | None = None
    labels: np.ndarray | None = None
    k: int = 0
    scaler_mean: np.ndarray | None = None
    scaler_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        check_name(self.name)
        if self.kind not in KINDS:
            raise HeadError(f"kind {str(self.kind)[:40]!r} must be one of {', '.join(KINDS)}")
        if self.task not in TASKS:
            raise HeadError(f"task {str(self.task)[:40]!r} must be one of {', '.join(TASKS)}")
        if not isinstance(self.collection, str) or not COLLECTION_RE.match(self.collection):
            raise HeadError(f"collection {str(self.collection)[:80]!r} is not a collection id")
        if (
            not isinstance(self.year, int)
            or isinstance(self.year, bool)
            or not 1900 <= self.year <= 2200
        ):
            raise HeadError(f"year {self.year!r} must be an integer 1900..2200")
        if (self.kind == "logistic" and self.task != "classification") or (
            self.kind == "linear" and self.task != "regression"
        ):
            raise HeadError(f"kind {self.kind} cannot do {self.task}")
        classification = self.task == "classification"
        if classification:
            if len(self.classes) < 2:
                raise HeadError("a classification head needs at least two classes")
            if len(self.classes) > MAX_CLASSES:
                raise HeadError(f"{len(self.classes)} classes; at most {MAX_CLASSES}")
            values = [c.value for c in self.classes]
            if values != sorted(set(values)):
                raise HeadError("class values must be distinct and sorted")
            if len({c.name for c in self.classes}) != len(self.classes):
                raise HeadError("class names must be distinct")
            if len({class_slug(c.name) for c in self.classes}) != len(self.classes):
                raise HeadError("class names must stay distinct as column names")
        elif self.classes:
            raise HeadError("a regression head has no classes")
        if self.kind in ("logistic", "linear"):
            self._validate_linear()
        else:
            self._validate_knn()
        if (self.scaler_mean is None) != (self.scaler_scale is None):
            raise HeadError("scaler needs both mean and scale")
        if self.scaler_mean is not None and self.scaler_scale is not None:
            for arr, what in ((self.scaler_mean, "scaler mean"), (self.scaler_scale, "scale")):
                if arr.shape != (EMBEDDING_DIM,) or not np.isfinite(arr).all():
                    raise HeadError(f"{what} must be {EMBEDDING_DIM} finite numbers")
            if not (self.scaler_scale > 0).all():
                raise HeadError("scaler scale must be positive")

    def _validate_linear(self) -> None:
        if self.coef is None or self.intercept is None:
            raise HeadError(f"a {self.kind} head needs coef and intercept")
        if self.vectors is not None or self.labels is not None:
            raise HeadError(f"a {self.kind} head has no vectors or labels")
        rows = self.coef.shape[0] if self.coef.ndim == 2 else -1
        if self.kind == "logistic":
            allowed = {len(self.classes)} | ({1} if len(self.classes) == 2 else set())
        else:
            allowed = {1}
        if self.coef.shape != (rows, EMBEDDING_DIM) or rows not in allowed:
            raise HeadError(
                f"coef has shape {self.coef.shape}; expected (rows, {EMBEDDING_DIM}) with rows "
                f"in {sorted(allowed)}"
            )
        if self.intercept.shape != (rows,):
            raise HeadError(f"intercept has shape {self.intercept.shape}; expected ({rows},)")
        if not (np.isfinite(self.coef).all() and np.isfinite(self.intercept).all()):
            raise HeadError("coef and intercept must be finite numbers")

    def _validate_knn(self) -> None:
        if self.vectors is None or self.labels is None:
            raise HeadError("a knn head needs vectors and labels")
        if self.coef is not None or self.intercept is not None:
            raise HeadError("a knn head has no coef or intercept")
        n = len(self.labels)
        if not 1 <= n <= MAX_VECTORS:
            raise HeadError(f"{n} training vectors; a knn head holds 1..{MAX_VECTORS}")
        if self.vectors.shape != (n, EMBEDDING_DIM) or not np.isfinite(self.vectors).all():
            raise HeadError(f"vectors must be ({n}, {EMBEDDING_DIM}) finite numbers")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= MAX_K:
            raise HeadError(f"k {self.k!r} must be an integer 1..{MAX_K}")
        if self.k > n:
            raise HeadError(f"k = {self.k} is more than the {n} training vectors")
        if not np.isfinite(self.labels).all():
            raise HeadError("labels must be finite numbers")
        if self.task == "classification":
            values = {c.value for c in self.classes}
            if not set(np.unique(self.labels).tolist()) <= values:
                raise HeadError("knn labels must be class values")

    # ------------------------------------------------------------------ JSON
    @classmethod
    def from_dict(cls, d: object) -> Head:
        """Build and validate a head from its JSON document (a dict)."""
        if not isinstance(d, Mapping):
            raise HeadError("a head must be a JSON object")
        unknown = set(d) - _KEYS
        if unknown:
            raise HeadError(f"unknown head fields: {', '.join(sorted(unknown))[:200]}")
        if d.get("type") != HEAD_TYPE:
            raise HeadError(f"type must be {HEAD_TYPE!r}")
        if d.get("version") != HEAD_VERSION:
            raise HeadError(f"version {str(d.get('version'))[:20]!r} is not {HEAD_VERSION}")
        kind, task = d.get("kind"), d.get("task")
        if kind not in KINDS or task not in TASKS:
            raise HeadError(f"kind must be one of {KINDS} and task one of {TASKS}")
        raw_classes = d.get("classes", [])
        if not isinstance(raw_classes, list) or len(raw_classes) > MAX_CLASSES:
            raise HeadError(f"classes must be a list of at most {MAX_CLASSES}")
        classes = tuple(HeadClass.from_dict(c) for c in raw_classes)
        coef = intercept = vectors = labels = None
        k = 0
        foreign = ({"vectors", "labels", "k"} if kind != "knn" else {"coef", "intercept"}) & set(d)
        if foreign:
            raise HeadError(f"a {kind} head has no {', '.join(sorted(foreign))}")
        if kind in ("logistic", "linear"):
            coef = _floats(d.get("coef"), (None, EMBEDDING_DIM), "coef")
            if coef.shape[0] > MAX_CLASSES:
                raise HeadError(f"coef has more than {MAX_CLASSES} rows")
            intercept = _floats(d.get("intercept"), (coef.shape[0],), "intercept")
        else:
            raw_labels = d.get("labels")
            if not isinstance(raw_labels, list) or not 1 <= len(raw_labels) <= MAX_VECTORS:
                raise HeadError(f"labels must be a list of 1..{MAX_VECTORS}")
            labels = _floats(raw_labels, (len(raw_labels),), "labels")
            if task == "classification":
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw_labels):
                    raise HeadError("labels of a knn classifier must be integer class values")
                labels = labels.astype(np.int64)
            vectors = _vectors(d.get("vectors"), len(raw_labels))
            raw_k = d.get("k")
            if not isinstance(raw_k, int) or isinstance(raw_k, bool):
                raise HeadError("k must be an integer")
            k = raw_k
        mean = scale = None
        scaler = d.get("scaler")
        if scaler is not None:
            if not isinstance(scaler, Mapping) or set(scaler) != {"mean", "scale"}:
                raise HeadError("scaler must be an object with mean and scale")
            mean = _floats(scaler["mean"], (EMBEDDING_DIM,), "scaler mean")
            scale = _floats(scaler["scale"], (EMBEDDING_DIM,), "scaler scale")
        return cls(
            name=d.get("name"),  # type: ignore[arg-type]  # validated in __post_init__
            kind=kind,
            task=task,
            collection=d.get("collection"),  # type: ignore[arg-type]
            year=d.get("year"),  # type: ignore[arg-type]
            classes=classes,
            coef=coef,
            intercept=intercept,
            vectors=vectors,
            labels=labels,
            k=k,
            scaler_mean=mean,
            scaler_scale=scale,
        )

    @classmethod
    def from_json(cls, text: str | bytes, max_bytes: int = 64 * 1024 * 1024) -> Head:
        """Parse and validate a head's JSON text (bounded in size)."""
        if len(text) > max_bytes:
            raise HeadError(f"head document is {len(text)} bytes; at most {max_bytes}")
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HeadError(f"head document is not JSON: {exc}") from None
        return cls.from_dict(doc)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (vectors as base64 of little-endian float32)."""
        d: dict[str, Any] = {
            "type": HEAD_TYPE,
            "version": HEAD_VERSION,
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "collection": self.collection,
            "year": self.year,
        }
        if self.classes:
            d["classes"] = [c.to_dict() for c in self.classes]
        if self.coef is not None and self.intercept is not None:
            d["coef"] = self.coef.tolist()
            d["intercept"] = self.intercept.tolist()
        if self.vectors is not None and self.labels is not None:
            d["vectors"] = base64.b64encode(
                np.ascontiguousarray(self.vectors, dtype="<f4").tobytes()
            ).decode("ascii")
            d["labels"] = self.labels.tolist()
            d["k"] = self.k
        if self.scaler_mean is not None and self.scaler_scale is not None:
            d["scaler"] = {"mean": self.scaler_mean.tolist(), "scale": self.scaler_scale.tolist()}
        return d

    def to_json(self) -> bytes:
        """The JSON document as UTF-8 bytes (sorted keys: deterministic)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False).encode()

    # ------------------------------------------------------------------ applying
    @property
    def class_values(self) -> np.ndarray:
        """(n_classes,) uint8 class values in the order of the probability columns."""
        return np.array([c.value for c in self.classes], dtype=np.uint8)

    def class_by_value(self, value: int) -> HeadClass:
        for c in self.classes:
            if c.value == value:
                return c
        raise KeyError(value)

    def predict(self, values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the head to dequantised vectors.

        Args:
            values: float (..., 128) dequantised vectors (invalid pixels may hold anything).
            valid: bool (...) which pixels to predict.

        Returns:
            classification: ``(classes, probability)``, uint8 class values with 0 where not
            valid, and float32 probability of the winning class (NaN where not valid);
            regression: ``(value, value)``, the float32 prediction (NaN where not valid),
            the same array twice.
        """
        values = np.asarray(values)
        valid = np.asarray(valid, dtype=bool)
        if values.shape[-1:] != (EMBEDDING_DIM,) or values.shape[:-1] != valid.shape:
            raise HeadError(
                f"values {values.shape} and valid {valid.shape} must be (..., {EMBEDDING_DIM}) "
                "and (...)"
            )
        shape = valid.shape
        flat_values = values.reshape(-1, EMBEDDING_DIM)
        flat_valid = valid.reshape(-1)
        classification = self.task == "classification"
        classes = np.zeros(valid.size if classification else 0, dtype=np.uint8)
        out = np.full(valid.size, np.nan, dtype=np.float32)
        with one_blas_thread():
            self._predict_chunks(flat_values, flat_valid, classes if classification else None, out)
        if classification:
            return classes.reshape(shape), out.reshape(shape)
        value: np.ndarray = out.reshape(shape)
        return value, value

    def _predict_chunks(
        self,
        flat_values: np.ndarray,
        flat_valid: np.ndarray,
        classes: np.ndarray | None,
        out: np.ndarray,
    ) -> None:
        """Fill ``classes``/``out`` chunk by chunk (contiguous slices: views, no copies)."""
        values_of = self.class_values
        for start in range(0, flat_valid.size, PREDICT_CHUNK):
            part = slice(start, start + PREDICT_CHUNK)
            ok = flat_valid[part]
            if not ok.any():
                continue
            if self.kind == "logistic" and classes is not None:  # whole chunk: no copy
                with np.errstate(invalid="ignore", over="ignore"):
                    best, prob = self._logistic_winner(flat_values[part], ok)
                classes[part][ok] = values_of[best[ok]]
                out[part][ok] = prob[ok]
                continue
            x = flat_values[part] if ok.all() else flat_values[part][ok]  # slices are views
            if classes is not None:
                p = self.predict_proba(x)
                best = np.argmax(p, axis=1)
                classes[part][ok] = values_of[best]
                out[part][ok] = p[np.arange(len(best)), best]
            else:
                out[part][ok] = self.predict_value(x)

    @cached_property
    def _linear32(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The folded weights and biases in float32, and the rounding bound's factor: a
        float32 logit is within ``factor * max|x|`` of the float64 one (Higham's bound for
        a dot product of n terms, doubled for the rounding of the weights themselves)."""
        weights, bias = self._linear
        n = weights.shape[0] + 2
        gamma = 2.0 * n * float(np.finfo(np.float32).eps)
        factor = gamma * float(np.abs(weights).sum(axis=0).max()) + 1e-30
        return weights.astype(np.float32), bias.astype(np.float32), factor

    def _logistic_winner(
        self, x: np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(winning class index, its probability float32) of a multinomial logistic head.

        The logits are computed in float32 (half the memory traffic of float64, no upcast
        copy of every vector); a row whose two best logits are closer than the float32
        rounding bound (plus the bias's) is computed again in float64, so the winner is
        always the float64 (scikit-learn's) argmax. The winning probability is
        ``1 / sum(exp(z - z_max))``, within ~1e-6 of float64's. Rows not ``valid`` (NaN)
        are left to the caller to mask.
        """
        weights = self._linear[0]
        if weights.shape[1] == 1 or x.dtype != np.float32:  # binary head, or exact input
            p = self.predict_proba(x)
            best = np.argmax(p, axis=1)
            return best, p[np.arange(len(best)), best].astype(np.float32)
        w32, b32, factor = self._linear32
        z = x @ w32
        z += b32
        magnitude = np.maximum(x.max(axis=1), -x.min(axis=1))  # max|x| per row, no |x| copy
        return self._settle(z, factor * magnitude, valid, lambda rows: x[rows])

    def _settle(
        self,
        z: np.ndarray,
        rounding: np.ndarray,
        valid: np.ndarray | None,
        vectors: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """(winner, its probability) from float32 logits ``z`` (overwritten), each row's
        rounding bound on its products, and the exact vectors of any rows (``vectors``):
        a row whose lead is within twice the bound (plus the bias's) gets the float64 answer.
        """
        best = np.argmax(z, axis=1)
        two = np.partition(z, -2, axis=1)
        top = two[:, -1]
        gap = top - two[:, -2]  # the winner's lead (0 on an exact tie)
        eps = float(np.finfo(np.float32).eps)
        bound = 2.0 * (rounding + 4.0 * eps * (np.abs(top) + 1.0))
        z -= top[:, None]
        np.exp(z, out=z)
        prob = (1.0 / z.sum(axis=1)).astype(np.float32)
        near = ~(gap > bound)  # near ties (and NaN rows)
        if valid is not None:
            near &= valid
        close = np.flatnonzero(near)
        if close.size:
            p = self.predict_proba(vectors(close))
            b64 = np.argmax(p, axis=1)
            best[close] = b64
            prob[close] = p[np.arange(len(b64)), b64]
        return best, prob

    def predict_scaled_codes(
        self, codes: np.ndarray, scales: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` of the vectors ``codes * scales`` (per-pixel-scale embeddings),
        without making them: a multinomial logistic head computes ``scales * (codes @ w) +
        b`` in float32, and a pixel whose two best logits are within the rounding bound is
        dequantised exactly as the reader does (``float32(codes) * scale``) and computed in
        float64. Same answer as ``predict(codes * scales[..., None], valid)``; other heads
        take that path.

        Args:
            codes: integer ``(..., 128)`` codes.
            scales: float32 ``(...)`` per-pixel scales.
            valid: bool ``(...)`` which pixels to predict.
        """
        codes = np.asarray(codes)
        valid = np.asarray(valid, dtype=bool)
        scales = np.asarray(scales, dtype=np.float32)
        fast = (
            self.kind == "logistic"
            and self.task == "classification"
            and self._linear[0].shape[1] > 1
            and np.issubdtype(codes.dtype, np.integer)
            and codes.shape[:-1] == valid.shape == scales.shape
            and codes.shape[-1:] == (EMBEDDING_DIM,)
        )
        if not fast:
            values = codes.astype(np.float32) * scales[..., None]
            values[~valid] = np.nan
            return self.predict(values, valid)
        info = np.iinfo(codes.dtype)
        largest = float(max(abs(info.min), abs(info.max)))
        flat_codes = codes.reshape(-1, EMBEDDING_DIM)
        flat_scales = scales.reshape(-1)
        flat_valid = valid.reshape(-1)
        classes = np.zeros(valid.size, dtype=np.uint8)
        out = np.full(valid.size, np.nan, dtype=np.float32)
        w32, b32, factor = self._linear32
        with one_blas_thread(), np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, flat_valid.size, PREDICT_CHUNK):
                part = slice(start, start + PREDICT_CHUNK)
                ok = flat_valid[part]
                if not ok.any():
                    continue
                s = flat_scales[part]
                c = flat_codes[part]
                z = c.astype(np.float32) @ w32
                z *= s[:, None]
                z += b32
                # twice the vectors' bound: the codes' product and the scale multiply round on
                # top of what rounding the vectors would have done
                best, prob = self._settle(
                    z, 2.0 * factor * np.abs(s) * largest, ok, partial(_dequantised_rows, c, s)
                )
                classes[part][ok] = self.class_values[best[ok]]
                out[part][ok] = prob[ok]
        return classes.reshape(valid.shape), out.reshape(valid.shape)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.scaler_mean is not None and self.scaler_scale is not None:
            x = (x - self.scaler_mean) / self.scaler_scale
        return x

    @cached_property
    def _linear(self) -> tuple[np.ndarray, np.ndarray]:
        """(128, rows) weights and (rows,) biases with the scaler folded in, so that
        ``x @ w + b == scaled(x) @ coef.T + intercept`` without scaling every pixel."""
        assert self.coef is not None and self.intercept is not None
        weights, bias = self.coef, self.intercept
        if self.scaler_mean is not None and self.scaler_scale is not None:
            weights = self.coef / self.scaler_scale
            bias = self.intercept - weights @ self.scaler_mean
        return np.ascontiguousarray(weights.T), bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, n_classes) class probabilities of (n, 128) vectors (classification)."""
        if self.task != "classification":
            raise HeadError("predict_proba needs a classification head")
        if self.kind == "logistic":
            weights, bias = self._linear
            z = np.asarray(x, dtype=np.float64) @ weights + bias
            if weights.shape[1] == 1:  # binary, as scikit-learn stores it
                p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
                return np.stack([1.0 - p1, p1], axis=1)
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            return z
        neighbours = self._neighbours(self._prepare(x))
        assert self.labels is not None
        votes = self.labels[neighbours]  # (n, k) class values
        return np.stack([(votes == c.value).mean(axis=1) for c in self.classes], axis=1)

    def predict_value(self, x: np.ndarray) -> np.ndarray:
        """(n,) float32 predictions of (n, 128) vectors (regression)."""
        if self.task != "regression":
            raise HeadError("predict_value needs a regression head")
        if self.kind == "linear":
            weights, bias = self._linear
            return (np.asarray(x, dtype=np.float64) @ weights[:, 0] + bias[0]).astype(np.float32)
        assert self.labels is not None
        return self.labels[self._neighbours(self._prepare(x))].mean(axis=1).astype(np.float32)

    @cached_property
    def _train(self) -> tuple[np.ndarray, np.ndarray]:
        """The k-NN training vectors as prepared (scaled), and their squared norms."""
        assert self.vectors is not None
        train = self._prepare(self.vectors)
        return train, (train * train).sum(axis=1)

    def _neighbours(self, x: np.ndarray) -> np.ndarray:
        """(n, k) indices of the k nearest training vectors (Euclidean), nearest first."""
        train, train_sq = self._train
        d2 = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ train.T) + train_sq
        k = self.k
        if k < d2.shape[1]:
            part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(d2.shape[1]), d2.shape).copy()
        order = np.argsort(np.take_along_axis(d2, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)


def _dequantised_rows(codes: np.ndarray, scales: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The reader's float32 vectors ``float32(codes) * scale`` of some rows."""
    out: np.ndarray = codes[rows].astype(np.float32) * scales[rows][:, None]
    return out


def one_blas_thread(openmp: bool = False) -> Any:
    """BLAS (and with ``openmp`` OpenMP too) limited to one thread while a head is applied or
    fitted; a context manager.

    The products here are tall and thin ((pixels, 128) x (128, classes)): memory-bound, and
    on a busy machine BLAS threads spinning against each other (and against the engine's other
    worker processes) made them ~4x slower. Fitting is the same story: cross-validation and
    the learning curve are dozens of small L-BFGS fits on (labels, 128) arrays; training the
    demo's land-cover head took 59 s of CPU (130 s wall, loaded 2-core machine) with 2 BLAS
    threads and 12.5 s (22 s) with one, the same head.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api=None if openmp else "blas")


def finite_or_none(x: float) -> float | None:
    """A float for JSON: None when not finite."""
    return x if math.isfinite(x) else None

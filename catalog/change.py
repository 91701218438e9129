"""Change between two years, defined once (DESIGN §7).

* A pixel's change is the cosine distance ``1 - cos(a, b)`` between its two years' dequantised
  vectors. A per-pixel scale is a positive factor on the whole vector, so the distance of
  ``q * s`` equals that of ``q``; we still compute it on dequantised values (float64) so every
  caller gets the same number.
* An area's (a watershed's, a polygon's) change is the cosine distance between its two mean
  vectors, plus the share of its pixels whose own distance exceeds a threshold.
* Pixels invalid in either year (or with a zero vector) do not count, in the means nor the share.

Everything works on arrays already in memory; the readers (``catalog.reader``, the API's
cached readers, the publisher's join) bring the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: Default threshold on a pixel's cosine distance for "this pixel changed".
DEFAULT_THRESHOLD = 0.5
BLOCK = 65536  # pixels converted to float64 at once (128 x 65536 x 8 B = 64 MB per year)

FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]


def cosine_distance(
    a: FloatArray, b: FloatArray, valid: BoolArray | None = None
) -> tuple[npt.NDArray[np.float64], BoolArray]:
    """Cosine distance of vectors along the last axis, in float64.

    Args:
        a: vectors of the first year, ``(..., dims)``.
        b: vectors of the second year, same shape.
        valid: optional ``(...)`` mask of pixels valid in both years.

    Returns:
        ``(distance, ok)``: distance ``(...)`` (NaN where not ``ok``), and ``ok``: valid, finite
        in both years and neither vector zero.
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # NaN rows stay NaN through the products and fail the norm tests: no masked copies
        na = np.sqrt(np.einsum("...d,...d->...", a64, a64))
        nb = np.sqrt(np.einsum("...d,...d->...", b64, b64))
        ok: BoolArray = np.asarray((na > 0) & (nb > 0) & np.isfinite(na) & np.isfinite(nb))
        if valid is not None:
            ok &= np.asarray(valid, dtype=bool)
        dist = 1.0 - np.einsum("...d,...d->...", a64, b64) / (na * nb)
    dist = np.where(ok, dist, np.nan)
    return dist, ok


@dataclass(frozen=True)
class AreaChange:
    """Change of an area between two years.

    Attributes:
        distance: cosine distance of the two mean vectors (NaN without a pixel).
        changed_share: share of the counted pixels whose distance exceeds ``threshold``.
        pixels: pixels counted (valid in both years).
        changed: how many of them exceed the threshold.
        threshold: the threshold used.
    """

    distance: float
    changed_share: float
    pixels: int
    changed: int
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None)."""
        return {
            "distance": None if np.isnan(self.distance) else self.distance,
            "changed_share": None if np.isnan(self.changed_share) else self.changed_share,
            "pixels": self.pixels,
            "changed_pixels": self.changed,
            "threshold": self.threshold,
        }


@dataclass
class ChangeSums:
    """Running per-area sums for :class:`AreaChange` (float64), so areas can span tiles.

    ``add`` takes a block of pixels with an area label each (``-1`` = none); areas are
    ``0 .. n-1``.
    """

    n: int
    dims: int
    threshold: float = DEFAULT_THRESHOLD
    sums_a: npt.NDArray[np.float64] = field(init=False)
    sums_b: npt.NDArray[np.float64] = field(init=False)
    pixels: npt.NDArray[np.int64] = field(init=False)
    changed: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.sums_a = np.zeros((self.n, self.dims), dtype=np.float64)
        self.sums_b = np.zeros((self.n, self.dims), dtype=np.float64)
        self.pixels = np.zeros(self.n, dtype=np.int64)
        self.changed = np.zeros(self.n, dtype=np.int64)

    def add(self, labels: npt.NDArray[np.integer[Any]], a: FloatArray, b: FloatArray) -> None:
        """Add pixels: ``labels`` ``(k,)``, vectors ``a``/``b`` ``(k, dims)`` (NaN = invalid)."""
        labels = np.asarray(labels).reshape(-1)
        a = np.asarray(a).reshape(len(labels), -1)
        b = np.asarray(b).reshape(len(labels), -1)
        for start in range(0, len(labels), BLOCK):  # bounds the float64 temporaries
            stop = start + BLOCK
            self._add(labels[start:stop], a[start:stop], b[start:stop])

    def _add(self, labels: npt.NDArray[np.integer[Any]], a: FloatArray, b: FloatArray) -> None:
        keep = np.flatnonzero(labels >= 0)
        a64 = a[keep].astype(np.float64)
        b64 = b[keep].astype(np.float64)
        dist, ok = cosine_distance(a64, b64)
        if not ok.any():
            return
        from scipy import sparse

        rows = np.flatnonzero(ok)
        lab = labels[keep][rows].astype(np.int64)
        self.pixels += np.bincount(lab, minlength=self.n)
        self.changed += np.bincount(lab[dist[rows] > self.threshold], minlength=self.n)
        # per-area sums as one sparse (areas here x pixels) product: no gathered copy of the
        # vectors; rows not in it (invalid, NaN) are never touched
        areas, index = np.unique(lab, return_inverse=True)
        member = sparse.csr_matrix(
            (np.ones(len(rows)), (index, rows)), shape=(len(areas), len(a64))
        )
        self.sums_a[areas] += member @ a64
        self.sums_b[areas] += member @ b64

    def merge(self, other: ChangeSums) -> None:
        """Add another accumulator of the same areas (parallel partial sums)."""
        self.sums_a += other.sums_a
        self.sums_b += other.sums_b
        self.pixels += other.pixels
        self.changed += other.changed

    def result(self, index: int) -> AreaChange:
        """The change of area ``index``."""
        n = int(self.pixels[index])
        if n == 0:
            return AreaChange(float("nan"), float("nan"), 0, 0, self.threshold)
        dist, _ = cosine_distance(self.sums_a[index] / n, self.sums_b[index] / n)
        changed = int(self.changed[index])
        return AreaChange(float(dist), changed / n, n, changed, self.threshold)

    def results(self) -> list[AreaChange]:
        """Every area's change, in label order."""
        return [self.result(i) for i in range(self.n)]


def area_change(a: FloatArray, b: FloatArray, threshold: float = DEFAULT_THRESHOLD) -> AreaChange:
    """The change of one area from its pixels' vectors ``(..., dims)`` of both years."""
    dims = np.asarray(a).shape[-1]
    sums = ChangeSums(1, dims, threshold)
    flat_a = np.asarray(a).reshape(-1, dims)
    sums.add(np.zeros(len(flat_a), dtype=np.int64), flat_a, np.asarray(b).reshape(-1, dims))
    return sums.result(0)

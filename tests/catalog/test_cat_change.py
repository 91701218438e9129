"""The change measure (catalog.change) against plain formulas."""

from __future__ import annotations

import numpy as np

from tessera_stac.catalog.change import ChangeSums, area_change, cosine_distance


def _plain(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(1 - a @ b / (np.sqrt(a @ a) * np.sqrt(b @ b)))


def test_pixel_distance_is_scale_free_and_masks_invalid() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 128)).astype(np.float32)
    b = rng.normal(size=(50, 128)).astype(np.float32)
    a[3] = np.nan  # invalid in the first year
    b[7] = 0.0  # a zero vector has no direction
    dist, ok = cosine_distance(a, b)
    assert not ok[3] and not ok[7] and np.isnan(dist[[3, 7]]).all()
    for i in np.flatnonzero(ok):
        assert abs(dist[i] - _plain(a[i], b[i])) < 1e-12
    # a positive per-pixel scale changes nothing
    scaled, _ = cosine_distance(a * np.float32(0.07), b * np.float32(3.0))
    np.testing.assert_allclose(scaled[ok], dist[ok], atol=1e-12)
    same, _ = cosine_distance(a[ok], a[ok])
    np.testing.assert_allclose(same, 0, atol=1e-12)


def test_area_change_over_labels_and_tiles() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(1000, 128)).astype(np.float32)
    b = a + rng.normal(scale=2.0, size=a.shape).astype(np.float32)
    b[:300] = rng.normal(size=(300, 128))  # changed pixels
    a[900:] = np.nan  # invalid in one year: never counted
    labels = rng.integers(-1, 3, size=1000)
    sums = ChangeSums(3, 128, threshold=0.5)
    # two "tiles" added separately give the same as one pass
    sums.add(labels[:400], a[:400], b[:400])
    sums.add(labels[400:], a[400:], b[400:])
    for k in range(3):
        sel = (labels == k) & np.isfinite(a).all(axis=1)
        d = np.array([_plain(a[i], b[i]) for i in np.flatnonzero(sel)])
        want = _plain(a[sel].astype(np.float64).mean(0), b[sel].astype(np.float64).mean(0))
        got = sums.result(k)
        assert got.pixels == sel.sum() and got.changed == (d > 0.5).sum()
        assert (
            abs(got.distance - want) < 1e-12 and abs(got.changed_share - (d > 0.5).mean()) < 1e-12
        )
    whole = area_change(a, b)
    valid = np.isfinite(a).all(axis=1)
    assert whole.pixels == valid.sum()
    empty = ChangeSums(1, 128).result(0)
    assert empty.pixels == 0 and np.isnan(empty.distance) and empty.as_dict()["distance"] is None

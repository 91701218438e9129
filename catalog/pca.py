"""The join's PCA colours: micro-watersheds coloured by the first three principal components of
their mean embedding vectors (watersheds with similar colours have similar embeddings).

Shared by the join's map (``publisher.join.pca_map``) and the feature tables loaded next to
pgSTAC (``catalog.pgstac.watersheds``), so the colour of a watershed is the same on both."""

from __future__ import annotations

import numpy as np


def pca_colours(means: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] per row from the first 3 principal components of ``means`` (n, d).

    Rows with NaN get NaN. Each component is stretched between its 2nd and 98th percentile, so
    one outlier does not wash out the others. With fewer than 2 usable rows every usable row is
    mid-grey.
    """
    n = means.shape[0]
    rgb = np.full((n, 3), np.nan)
    ok = np.isfinite(means).all(axis=1)
    if ok.sum() < 2:
        rgb[ok] = 0.5
        return rgb
    x = means[ok].astype(np.float64)
    x -= x.mean(axis=0)
    u, sv, _ = np.linalg.svd(x, full_matrices=False)
    scores = u[:, :3] * sv[:3]
    if scores.shape[1] < 3:
        scores = np.pad(scores, ((0, 0), (0, 3 - scores.shape[1])))
    lo = np.percentile(scores, 2, axis=0)
    hi = np.percentile(scores, 98, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    rgb[ok] = np.clip((scores - lo) / span, 0.0, 1.0)
    return rgb


def hex_colours(rgb: np.ndarray) -> list[str | None]:
    """``#rrggbb`` of each row of :func:`pca_colours` (None where NaN)."""
    out: list[str | None] = []
    for row in rgb:
        if not np.isfinite(row).all():
            out.append(None)
            continue
        r, g, b = (round(float(v) * 255) for v in row)
        out.append(f"#{r:02x}{g:02x}{b:02x}")
    return out

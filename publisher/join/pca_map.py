"""A map of a block's micro-watersheds coloured by the first three principal components of
their mean embedding vectors: watersheds with similar colours have similar embeddings.

:func:`render_pca_overlay` draws the map layer (no axes, no title, transparent outside the
polygons) exactly over a lon/lat bounding box, so a web map that stretches the image over the
item's ``bbox`` (STAC Browser's Map view) registers it with the polygons;
:func:`render_pca_map` draws the figure with title, axes and legend for people reading it."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np

NO_DATA_COLOUR = (0.85, 0.85, 0.85)


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


def render_pca_overlay(
    table: gpd.GeoDataFrame,
    means: np.ndarray,
    path: Path,
    bbox: tuple[float, float, float, float],
    width: int = 1024,
) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """The map layer of :func:`pca_colours` (see ``publisher.overlay.render_overlay``)."""
    from tessera_stac.publisher.overlay import render_overlay

    return render_overlay(table, pca_colours(means), path, bbox, width)


def render_pca_map(table: gpd.GeoDataFrame, means: np.ndarray, path: Path, title: str) -> Path:
    """Write a PNG map of the MWS in ``table`` coloured by :func:`pca_colours` of ``means``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rgb = pca_colours(means)
    has = np.isfinite(rgb).all(axis=1)
    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    try:
        if has.any():
            table[has].plot(
                ax=ax, color=[tuple(c) for c in rgb[has]], edgecolor="white", linewidth=0.4
            )
        if (~has).any():
            table[~has].plot(
                ax=ax, color=NO_DATA_COLOUR, edgecolor="grey", linewidth=0.4, hatch="//"
            )
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
        mid_lat = (table.total_bounds[1] + table.total_bounds[3]) / 2
        ax.set_aspect(1 / np.cos(np.radians(float(mid_lat))))
        ax.legend(
            handles=[
                Patch(color=(0.4, 0.6, 0.8), label="colour = PC1/PC2/PC3 of mean embedding"),
                Patch(facecolor=NO_DATA_COLOUR, hatch="//", label="no valid pixel"),
            ],
            loc="lower left",
            fontsize=8,
        )
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path

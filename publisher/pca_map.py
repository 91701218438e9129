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
    """Write the PCA colours of ``table`` as a web-mercator (EPSG:3857) PNG whose edges are
    exactly ``bbox`` (west, south, east, north, degrees).

    Returns ((height, width), the image's bounds in EPSG:3857 metres).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pyproj import Transformer

    west, south, east, north = (float(v) for v in bbox)
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    (x0, x1), (y0, y1) = to_merc.transform([west, east], [south, north])
    height = max(1, round(width * (y1 - y0) / max(x1 - x0, 1e-9)))
    rgb = pca_colours(means)
    has = np.isfinite(rgb).all(axis=1)
    merc = table.to_crs(3857)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        if has.any():
            merc[has].plot(
                ax=ax, color=[tuple(c) for c in rgb[has]], edgecolor="white", linewidth=0.4
            )
        if (~has).any():
            merc[~has].plot(ax=ax, color=NO_DATA_COLOUR, edgecolor="grey", linewidth=0.4)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("auto")
        fig.savefig(path, format="png", dpi=dpi, transparent=True)
    finally:
        plt.close(fig)
    return (height, width), (x0, y0, x1, y1)


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

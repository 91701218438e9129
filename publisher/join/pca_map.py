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

from tessera_stac.catalog.pca import pca_colours

__all__ = ["pca_colours", "render_pca_map", "render_pca_overlay"]

NO_DATA_COLOUR = (0.85, 0.85, 0.85)


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

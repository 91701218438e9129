"""Map layers of polygon tables as images a web map overlays on an item's bbox.

STAC Browser (like most web maps) stretches an item's ``overview``/``visual`` PNG over the
item's ``bbox`` on a web-mercator map. :func:`render_overlay` draws polygons that way: no axes,
no title, no margin, transparent outside the polygons, rows and columns on the web-mercator
grid whose edges are the bbox, so the image registers with the polygons.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np

NO_DATA_COLOUR = (0.85, 0.85, 0.85)


def render_overlay(
    table: gpd.GeoDataFrame,
    rgb: np.ndarray,
    path: Path,
    bbox: tuple[float, float, float, float],
    width: int = 1024,
    edge: str = "white",
) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """Write ``table``'s polygons filled with ``rgb`` ((n, 3) in [0, 1]; NaN rows grey) as a
    web-mercator (EPSG:3857) PNG whose edges are exactly ``bbox`` (west, south, east, north).

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
    has = np.isfinite(rgb).all(axis=1)
    merc = table.to_crs(3857)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        if has.any():
            merc[has].plot(ax=ax, color=[tuple(c) for c in rgb[has]], edgecolor=edge, linewidth=0.4)
        if (~has).any():
            merc[~has].plot(ax=ax, color=NO_DATA_COLOUR, edgecolor="grey", linewidth=0.4)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("auto")
        fig.savefig(path, format="png", dpi=dpi, transparent=True)
    finally:
        plt.close(fig)
    return (height, width), (x0, y0, x1, y1)


def distinct_colours(n: int, seed: int = 7) -> np.ndarray:
    """``n`` well-spread pastel colours (n, 3) in [0, 1], fixed for a given ``n``."""
    import colorsys

    hues = (np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.55, 0.9) for h in hues]).reshape(n, 3)


def overlay_cog(png: Path, path: Path, bounds: tuple[float, float, float, float]) -> Path:
    """Write the RGBA overlay ``png`` as a Cloud-Optimized GeoTIFF on its EPSG:3857 grid
    (``bounds`` in metres), DEFLATE-compressed so any COG reader (geotiff.js, GDAL, QGIS) and
    the API's tiler can draw it."""
    import rasterio
    import rasterio.shutil
    from PIL import Image
    from rasterio.enums import ColorInterp
    from rasterio.io import MemoryFile
    from rasterio.transform import from_bounds

    rgba = np.asarray(Image.open(png).convert("RGBA"))
    height, width = rgba.shape[:2]
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 4,
        "dtype": "uint8",
        "crs": "EPSG:3857",
        "transform": from_bounds(*bounds, width, height),
    }
    with MemoryFile() as memory, memory.open(**profile) as tmp:
        tmp.write(np.moveaxis(rgba, -1, 0))
        tmp.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        rasterio.shutil.copy(
            tmp, path, driver="COG", compress="DEFLATE", overview_resampling="nearest"
        )
    return path

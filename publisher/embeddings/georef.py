"""Georeferencing of TESSERA tiles: CRS, transform and shape of a 0.1° cell's UTM raster.

Each tile is its own raster at 10 m in the UTM zone of the cell centre. The official grid comes
from the cell's landmask GeoTIFF; without one it is rebuilt exactly (DESIGN §1):

* project the 4 corners of the cell into the zone;
* origin = (min easting of the two left corners, max northing of the two top corners);
* width = round((max easting of the right corners - origin x) / 10),
  height = round((origin y - min northing of the bottom corners) / 10).

The rectangle circumscribes the cell, so neighbouring tiles overlap slightly and origins are not
on a 10 m lattice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pyproj import Transformer

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell

PIXEL_SIZE = 10.0

Transform6 = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class TileGeoref:
    """The raster grid of one tile.

    Attributes:
        epsg: EPSG code of the UTM zone.
        transform: affine coefficients ``(a, b, c, d, e, f)`` (rasterio/GDAL order a..f).
        height: rows.
        width: columns.
        source: ``"landmask"`` or ``"rebuilt"``.
    """

    epsg: int
    transform: Transform6
    height: int
    width: int
    source: str = "rebuilt"

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def crs(self) -> str:
        """CRS as ``EPSG:nnnnn``."""
        return f"EPSG:{self.epsg}"

    def affine(self) -> object:
        """The transform as an :class:`affine.Affine` (what rasterio wants)."""
        from affine import Affine

        return Affine(*self.transform)

    def same_grid(self, other: TileGeoref, tol: float = 1e-6) -> bool:
        """True when CRS and shape are equal and the transforms agree within ``tol`` metres."""
        return (
            self.epsg == other.epsg
            and self.shape == other.shape
            and all(abs(a - b) <= tol for a, b in zip(self.transform, other.transform, strict=True))
        )


@lru_cache(maxsize=128)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


def rebuild_georef(cell: GridCell) -> TileGeoref:
    """Rebuild the official grid of ``cell`` from its corners (no landmask needed).

    Args:
        cell: the 0.1° grid cell.

    Returns:
        The tile's :class:`TileGeoref` with ``source="rebuilt"``.
    """
    epsg = cell.utm_epsg
    west, south, east, north = cell.bounds
    lons = np.array([west, west, east, east], dtype=np.float64)
    lats = np.array([south, north, south, north], dtype=np.float64)
    xs, ys = _to_utm(epsg).transform(lons, lats)
    # corners: 0 = SW, 1 = NW, 2 = SE, 3 = NE
    origin_x = float(min(xs[0], xs[1]))
    origin_y = float(max(ys[1], ys[3]))
    right = float(max(xs[2], xs[3]))
    bottom = float(min(ys[0], ys[2]))
    width = round((right - origin_x) / PIXEL_SIZE)
    height = round((origin_y - bottom) / PIXEL_SIZE)
    transform: Transform6 = (PIXEL_SIZE, 0.0, origin_x, 0.0, -PIXEL_SIZE, origin_y)
    return TileGeoref(epsg=epsg, transform=transform, height=height, width=width)


def georef_from_dataset(dataset: object, name: str) -> TileGeoref:
    """Read the grid of an open rasterio dataset (a landmask).

    Args:
        dataset: an open ``rasterio`` dataset.
        name: file name for error messages.

    Raises:
        InputError: when the dataset has no EPSG CRS or is rotated / not 10 m.
    """
    crs = getattr(dataset, "crs", None)
    epsg = crs.to_epsg() if crs is not None else None
    if epsg is None:
        raise InputError(f"{name}: landmask has no EPSG coordinate reference system")
    t = dataset.transform  # type: ignore[attr-defined]
    if t.b != 0 or t.d != 0:
        raise InputError(f"{name}: landmask grid is rotated ({t!r}); expected north-up")
    transform: Transform6 = (t.a, t.b, t.c, t.d, t.e, t.f)
    height, width = dataset.height, dataset.width  # type: ignore[attr-defined]
    return TileGeoref(
        epsg=int(epsg), transform=transform, height=height, width=width, source="landmask"
    )


def read_landmask(path: str | Path, name: str | None = None) -> tuple[TileGeoref, np.ndarray]:
    """Read a landmask GeoTIFF: its grid and its band (0 = water).

    Args:
        path: local path (or GDAL path) of the GeoTIFF.
        name: how to name the file in errors (defaults to ``path``).

    Raises:
        InputError: the file cannot be read as a georeferenced single-band raster.
    """
    import rasterio
    from rasterio.errors import RasterioError

    label = name or str(path)
    try:
        with rasterio.open(path) as ds:
            georef = georef_from_dataset(ds, label)
            mask = ds.read(1)
    except RasterioError as exc:
        raise InputError(f"{label}: cannot read landmask GeoTIFF: {exc}") from exc
    return georef, mask


def check_matches(landmask: TileGeoref, cell: GridCell, name: str) -> None:
    """Check a landmask's grid is the one this cell must have (zone rule, rebuilt shape).

    Raises:
        InputError: other CRS, or a shape/origin far from the rebuilt grid (another cell).
    """
    rebuilt = rebuild_georef(cell)
    if landmask.epsg != rebuilt.epsg:
        raise InputError(
            f"{name}: landmask CRS EPSG:{landmask.epsg} is not the UTM zone of {cell.name} "
            f"(EPSG:{rebuilt.epsg})"
        )
    dx = abs(landmask.transform[2] - rebuilt.transform[2])
    dy = abs(landmask.transform[5] - rebuilt.transform[5])
    if dx > 2 * PIXEL_SIZE or dy > 2 * PIXEL_SIZE:
        raise InputError(
            f"{name}: landmask origin ({landmask.transform[2]:.2f}, {landmask.transform[5]:.2f}) "
            f"is {max(dx, dy):.0f} m from the grid of {cell.name}"
        )

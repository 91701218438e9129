"""Publishing from TESSERA's Zarr v3 store (geotessera's ``geoemb:`` convention), local or S3.

The store (DESIGN §7)::

    zarr.json               root group, ``geoemb:`` attributes (model, quantisation)
    utmNN/                  one group per UTM zone, grid in EPSG:326NN at 10 m
        embeddings  int8    (time, band, y, x)  chunks (1, 128, 32, 32), shards (1, 128, 4096, 4096)
        scales      float32 (time, y, x)        NaN = water / invalid, +inf = land not yet filled
        time, band, x, y                        years, band numbers, pixel centres

Southern northings are made continuous by removing the 10,000 km false northing, so a zone's
grid runs across the equator. The zone grid's top-left corner is on the 10 m lattice.

Placement (geotessera's rule): each tile's whole UTM rectangle (DESIGN §1, rebuilt from the
cell corners) sits at ``row = round((origin_y - tile_y) / 10)``,
``col = round((tile_x - origin_x) / 10)``; tiles are written in order, so a later tile
overwrites the strip where it overlaps an earlier one.

A published cell is that rectangle read back: the tile's shape, its origin moved onto the zone
lattice (by less than 5 m), in the tile's own EPSG (327NN south of the equator: the false
northing added back). Only the inner chunks under the rectangle are read (zarr's sharding codec
reads a shard's index and then byte ranges), never a whole shard. Validity is the ``.npy``
path's (:func:`~tessera_stac.publisher.embeddings.cog.validity`) with the store's sentinels:
NaN scales are water (the store folds invalid scales into it), ``+inf`` is land not yet filled:
nodata, counted apart as ``unfilled``. A cell the store holds nothing for is skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera_stac.catalog.errors import InputError, TesseraStacError
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDING_DIM
from tessera_stac.catalog.store import is_s3, split_s3
from tessera_stac.catalog.store_settings import StorageSettings
from tessera_stac.publisher.embeddings.georef import PIXEL_SIZE, TileGeoref, rebuild_georef
from tessera_stac.publisher.embeddings.tiles import LoadedTile, TileFilter

ZARR_SCHEME = "zarr://"
ZONE_GROUP = re.compile(r"^utm(\d{2})$")
FALSE_NORTHING_SOUTH = 10_000_000.0
GEOREF_SOURCE = "Zarr store's zone grid"


class EmptyCellError(TesseraStacError):
    """The store holds nothing for this cell and year (every pixel unfilled)."""


def is_zarr_source(source: str, layout: str = "auto") -> bool:
    """True for ``--layout zarr``, a ``zarr://`` URI or a path/URI ending in ``.zarr``."""
    return (
        layout == "zarr" or source.startswith(ZARR_SCHEME) or source.rstrip("/").endswith(".zarr")
    )


def store_uri(source: str) -> str:
    """The store's location without the ``zarr://`` prefix (a local path or ``s3://...``)."""
    uri = source[len(ZARR_SCHEME) :] if source.startswith(ZARR_SCHEME) else source
    return uri.rstrip("/")


def zone_group_name(zone: int) -> str:
    """``utm{zone:02d}``."""
    return f"utm{zone:02d}"


def zone_of(cell: GridCell) -> int:
    """The UTM zone of a cell's centre (the zone group holding it)."""
    return cell.utm_epsg % 100


# ------------------------------------------------------------------------------ opening
def zarr_store(uri: str, settings: StorageSettings | None = None, read_only: bool = True) -> Any:
    """A zarr store object for a local folder or ``s3://bucket/prefix`` (through obstore)."""
    import zarr.storage

    uri = store_uri(uri)
    if not is_s3(uri):
        return zarr.storage.LocalStore(Path(uri).expanduser(), read_only=read_only)
    from obstore.store import S3Store

    cfg = settings or StorageSettings()
    bucket, prefix = split_s3(uri)
    options: dict[str, Any] = {"region": cfg.region}
    client: dict[str, Any] = {}
    if cfg.endpoint_url:
        options["endpoint"] = cfg.endpoint_url
        options["virtual_hosted_style_request"] = False
        if cfg.endpoint_url.startswith("http://"):
            client["allow_http"] = True
    if cfg.anonymous:
        options["skip_signature"] = True
    if cfg.access_key_id and cfg.secret_access_key:
        options["access_key_id"] = cfg.access_key_id
        options["secret_access_key"] = cfg.secret_access_key
    s3 = S3Store(bucket, prefix=prefix or None, client_options=client or None, **options)  # type: ignore[arg-type,unused-ignore]
    return zarr.storage.ObjectStore(s3, read_only=read_only)


def open_root(uri: str, settings: StorageSettings | None = None) -> Any:
    """Open the store's root group read-only (consolidated metadata when present)."""
    import zarr

    try:
        return zarr.open_group(store=zarr_store(uri, settings), mode="r", zarr_format=3)
    except Exception as exc:  # zarr raises FileNotFoundError, KeyError, ValueError...
        raise InputError(f"{store_uri(uri)}: cannot open as a Zarr v3 store: {exc}") from exc


def zone_groups(root: Any) -> dict[int, Any]:
    """``{zone: group}`` of the ``utmNN`` groups of a store."""
    out: dict[int, Any] = {}
    for name, member in root.groups():
        match = ZONE_GROUP.match(name)
        if match:
            out[int(match.group(1))] = member
    return out


@dataclass(frozen=True)
class ZoneGrid:
    """A zone group's grid: top-left corner (EPSG:326NN, continuous northing), size, years."""

    zone: int
    origin_x: float
    origin_y: float
    height: int
    width: int
    years: tuple[int, ...]

    @classmethod
    def of(cls, zone: int, group: Any) -> ZoneGrid:
        """Read the grid from a zone group's coordinate arrays (first pixel centres only)."""
        try:
            scales = group["scales"]
            xs = np.asarray(group["x"][:2], dtype=np.float64)
            ys = np.asarray(group["y"][:2], dtype=np.float64)
            years = tuple(int(v) for v in np.asarray(group["time"][:]))
        except KeyError as exc:
            raise InputError(f"{zone_group_name(zone)}: missing array {exc}") from exc
        if len(xs) > 1 and not math.isclose(xs[1] - xs[0], PIXEL_SIZE):
            raise InputError(f"{zone_group_name(zone)}: x spacing {xs[1] - xs[0]} is not 10 m")
        if len(ys) > 1 and not math.isclose(ys[0] - ys[1], PIXEL_SIZE):
            raise InputError(f"{zone_group_name(zone)}: y spacing {ys[0] - ys[1]} is not -10 m")
        half = PIXEL_SIZE / 2
        _, height, width = scales.shape
        return cls(zone, float(xs[0] - half), float(ys[0] + half), height, width, years)

    def time_index(self, year: int) -> int:
        """Index of ``year`` on the time axis."""
        try:
            return self.years.index(year)
        except ValueError:
            raise InputError(
                f"{zone_group_name(self.zone)}: no year {year} (store has {list(self.years)})"
            ) from None


def canonical_northing(northing: float, epsg: int) -> float:
    """A northing on the zone's continuous axis (southern zones: minus 10,000 km)."""
    return northing - FALSE_NORTHING_SOUTH if epsg >= 32700 else northing


def tile_offset(georef: TileGeoref, grid: ZoneGrid) -> tuple[int, int]:
    """Row and column where a tile's rectangle starts on the zone grid (origin rounded)."""
    x, y = georef.transform[2], canonical_northing(georef.transform[5], georef.epsg)
    return round((grid.origin_y - y) / PIXEL_SIZE), round((x - grid.origin_x) / PIXEL_SIZE)


def cell_window(cell: GridCell, grid: ZoneGrid) -> tuple[int, int, TileGeoref]:
    """Where a cell's rectangle lies on the zone grid, and the published raster's grid.

    Returns:
        ``(row, col, georef)``: the rectangle's top-left pixel on the zone grid, and the grid
        of the published raster (the tile's shape and EPSG, origin on the zone lattice).
    """
    tile = rebuild_georef(cell)
    row, col = tile_offset(tile, grid)
    x0 = grid.origin_x + col * PIXEL_SIZE
    y0 = grid.origin_y - row * PIXEL_SIZE
    if tile.epsg >= 32700:
        y0 += FALSE_NORTHING_SOUTH
    transform = (PIXEL_SIZE, 0.0, x0, 0.0, -PIXEL_SIZE, y0)
    return row, col, TileGeoref(tile.epsg, transform, tile.height, tile.width, GEOREF_SOURCE)


def read_region(
    array: Any,
    lead: tuple[Any, ...],
    rows: tuple[int, int],
    cols: tuple[int, int],
    fill: Any,
) -> np.ndarray:
    """``array[*lead, r0:r1, c0:c1]`` where parts outside the array read as ``fill``."""
    (r0, r1), (c0, c1) = rows, cols
    height, width = array.shape[-2:]
    ir0, ir1, ic0, ic1 = max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)
    kept = tuple(n for n, sel in zip(array.shape, lead, strict=False) if isinstance(sel, slice))
    out = np.full((*kept, r1 - r0, c1 - c0), fill, dtype=array.dtype)
    if ir1 > ir0 and ic1 > ic0:
        out[..., ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = array[
            (*lead, slice(ir0, ir1), slice(ic0, ic1))
        ]
    return out


def cell_has_data(scales: Any, t: int, row: int, col: int, georef: TileGeoref) -> bool:
    """True when the inner part of a cell's rectangle (10 % margins off, so the strips a
    neighbour's rectangle overlaps do not count) holds any filled pixel in year index ``t``."""
    height, width = georef.shape
    rows = (row + height // 10, row + height - height // 10)
    cols = (col + width // 10, col + width - width // 10)
    inner = read_region(scales, (t,), rows, cols, np.float32(np.inf))
    return not bool(np.isposinf(inner).all())


# ------------------------------------------------------------------------------- a cell
@dataclass(frozen=True)
class ZarrCell:
    """One (cell, year) to publish from a store (picklable: a task of the publish engines)."""

    store: str
    zone: int
    grid: str
    year: int
    storage: dict[str, Any] | None = None

    @property
    def item_id(self) -> str:
        """``{grid}_{year}``."""
        return f"{self.grid}_{self.year}"

    @property
    def embeddings(self) -> str:
        """The embeddings array read (what errors and provenance name)."""
        return f"{self.store}/{zone_group_name(self.zone)}/embeddings"

    @property
    def scales(self) -> str:
        """The scales array read."""
        return f"{self.store}/{zone_group_name(self.zone)}/scales"

    @property
    def landmask(self) -> str | None:
        """No landmask file: water is in the store's scales (NaN)."""
        return None

    @property
    def uris(self) -> tuple[str, ...]:
        """Provenance: the two arrays."""
        return (self.embeddings, self.scales)

    def load(self, scratch: Path, settings: StorageSettings | None = None) -> LoadedTile:
        """Read the cell's rectangle from the store (``scratch`` is unused: no downloads).

        Raises:
            EmptyCellError: every pixel of the rectangle is unfilled (+inf) for this year.
            InputError: the store lacks the zone, the year or the arrays.
        """
        del scratch
        cell = GridCell.parse(self.grid)
        cfg = StorageSettings(**self.storage) if self.storage is not None else settings
        root = open_root(self.store, cfg)
        group = zone_groups(root).get(self.zone)
        if group is None:
            raise InputError(f"{self.store}: no group {zone_group_name(self.zone)}")
        grid = ZoneGrid.of(self.zone, group)
        t = grid.time_index(self.year)
        row, col, georef = cell_window(cell, grid)
        rows, cols = (row, row + georef.height), (col, col + georef.width)
        if not cell_has_data(group["scales"], t, row, col, georef):
            raise EmptyCellError(f"{self.scales}: nothing filled for {self.grid} in {self.year}")
        scales = read_region(group["scales"], (t,), rows, cols, np.float32(np.inf))
        unfilled = np.isposinf(scales)
        codes = read_region(group["embeddings"], (t, slice(None)), rows, cols, 0)
        if codes.shape[0] != EMBEDDING_DIM:
            raise InputError(f"{self.embeddings}: {codes.shape[0]} bands, expected 128")
        water = np.isnan(scales)
        landmask = (~(water | unfilled)).astype(np.uint8)
        return LoadedTile(
            cell=cell,
            year=self.year,
            georef=georef,
            embeddings=np.ascontiguousarray(np.moveaxis(codes, 0, -1)),
            scales=scales,
            landmask=landmask,
            source=self,
            counts={
                "water": int(np.count_nonzero(water)),
                "unfilled": int(np.count_nonzero(unfilled)),
            },
        )


# ---------------------------------------------------------------------------- discovery
def _present_shards(store: Any, group_path: str, t: int) -> set[tuple[int, int]]:
    """``(shard_row, shard_col)`` of the scales shards written for time index ``t``."""
    from zarr.core.sync import sync

    async def keys() -> list[str]:
        return [k async for k in store.list_prefix(f"{group_path}/scales/c/{t}/")]

    out = set()
    for key in sync(keys()):
        parts = key.rsplit("/", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out.add((int(parts[1]), int(parts[2])))
    return out


def _zone_cells(grid: ZoneGrid, bbox: tuple[float, float, float, float] | None) -> list[GridCell]:
    from pyproj import Transformer

    from tessera_stac.publisher.samples.tiles import cells_in_bbox

    to_lonlat = Transformer.from_crs(f"EPSG:{32600 + grid.zone}", "EPSG:4326", always_xy=True)
    x1 = grid.origin_x + grid.width * PIXEL_SIZE
    y1 = grid.origin_y - grid.height * PIXEL_SIZE
    xs = [grid.origin_x, x1, grid.origin_x, x1, (grid.origin_x + x1) / 2, (grid.origin_x + x1) / 2]
    ys = [grid.origin_y, grid.origin_y, y1, y1, grid.origin_y, y1]
    lons, lats = to_lonlat.transform(xs, ys)
    west_zone = -180.0 + 6 * (grid.zone - 1)
    west, east = max(min(lons), west_zone), min(max(lons), west_zone + 6)
    south, north = max(min(lats), -90.0), min(max(lats), 90.0)
    if bbox is not None:
        west, south = max(west, bbox[0]), max(south, bbox[1])
        east, north = min(east, bbox[2]), min(north, bbox[3])
    if west >= east or south >= north:
        return []
    return [c for c in cells_in_bbox((west, south, east, north)) if zone_of(c) == grid.zone]


def discover(
    source: str,
    tile_filter: TileFilter | None = None,
    settings: StorageSettings | None = None,
) -> list[ZarrCell]:
    """The (cell, year)s a store holds data for, filtered like the ``.npy`` layouts.

    Cells are those of each zone group (centre in the zone) whose rectangle touches a written
    shard of that year and holds filled pixels away from its edges (:func:`cell_has_data`);
    ``--grid`` cells are taken as given (an empty one is skipped at publish time).

    Raises:
        InputError: the store cannot be opened or has no ``utmNN`` group.
    """
    flt = tile_filter or TileFilter()
    uri = store_uri(source)
    root = open_root(uri, settings)
    zones = zone_groups(root)
    if not zones:
        raise InputError(f"{uri}: no utmNN zone groups (not a geoemb TESSERA store?)")
    store = zarr_store(uri, settings)
    storage = settings.model_dump() if settings is not None else None
    found: list[ZarrCell] = []
    for zone, group in sorted(zones.items()):
        grid = ZoneGrid.of(zone, group)
        shard = group["scales"].shards or group["scales"].chunks
        if flt.grids is not None:
            cells = [
                GridCell.parse(g) for g in sorted(flt.grids) if zone_of(GridCell.parse(g)) == zone
            ]
        else:
            cells = _zone_cells(grid, flt.bbox)
        for t, year in enumerate(grid.years):
            if flt.years is not None and year not in flt.years:
                continue
            present = _present_shards(store, zone_group_name(zone), t)
            for cell in cells:
                if not flt.accepts(cell.name, year):
                    continue
                row, col, georef = cell_window(cell, grid)
                touched = {
                    (r, c)
                    for r in range(row // shard[1], (row + georef.height - 1) // shard[1] + 1)
                    for c in range(col // shard[2], (col + georef.width - 1) // shard[2] + 1)
                }
                if flt.grids is not None or (
                    touched & present and cell_has_data(group["scales"], t, row, col, georef)
                ):
                    found.append(ZarrCell(uri, zone, cell.name, year, storage))
    return sorted(found, key=lambda s: (s.year, s.grid))

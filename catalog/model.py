"""Plain data passed from the publisher to the STAC builders (the publisher/catalog contract).

A publisher run returns one :class:`PublishedTile` per (tile, year) it wrote; the pure item
builder (``tessera_stac.catalog.stac.create_item``) turns it into a STAC Item with no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

GRID_RE = re.compile(r"^grid_(-?\d+\.\d{2})_(-?\d+\.\d{2})$")


@dataclass(frozen=True)
class GridCell:
    """A 0.1° TESSERA grid cell, named by its centre (``grid_{lon:.2f}_{lat:.2f}``)."""

    lon: float
    lat: float

    @property
    def name(self) -> str:
        """The cell's name, e.g. ``grid_0.15_52.05``."""
        return f"grid_{self.lon:.2f}_{self.lat:.2f}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees: centre ± 0.05°."""
        return (
            round(self.lon - 0.05, 6),
            round(self.lat - 0.05, 6),
            round(self.lon + 0.05, 6),
            round(self.lat + 0.05, 6),
        )

    @property
    def utm_epsg(self) -> int:
        """EPSG code of the UTM zone of the cell centre (no Norway/Svalbard exceptions)."""
        zone = math.floor((self.lon + 180) / 6) + 1
        zone = min(max(zone, 1), 60)
        return (32600 if self.lat >= 0 else 32700) + zone

    @classmethod
    def parse(cls, name: str) -> GridCell:
        """Parse ``grid_X_Y``; raises ValueError naming the problem."""
        match = GRID_RE.match(name)
        if not match:
            raise ValueError(
                f"not a TESSERA grid name (grid_<lon>_<lat> with 2 decimals): {name!r}"
            )
        return cls(float(match.group(1)), float(match.group(2)))

    @classmethod
    def containing(cls, lon: float, lat: float) -> GridCell:
        """The cell whose bounds hold the point: ``floor(x*10)/10 + 0.05``."""
        return cls.of_index(cls.index_of(lon, lat))

    @staticmethod
    def index_of(lon: float, lat: float) -> tuple[int, int]:
        """``(floor(lon*10), floor(lat*10))``: the same for every point of a cell (a batch
        groups its points by it and makes each cell once, :meth:`of_index`)."""
        return math.floor(lon * 10), math.floor(lat * 10)

    @classmethod
    def of_index(cls, index: tuple[int, int]) -> GridCell:
        """The cell of :meth:`index_of`'s ``index``."""
        return cls(round(index[0] / 10 + 0.05, 2), round(index[1] / 10 + 0.05, 2))


@dataclass(frozen=True)
class AssetRecord:
    """One written file: where it is and how to check it."""

    key: str
    href: str
    media_type: str
    size: int
    checksum: str  # multihash (hex), e.g. "1220" + sha256 hex, as file:checksum wants
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class PixelCounts:
    """How many pixels of a tile were valid, invalid, and sanitised (bad scales masked)."""

    valid: int
    invalid: int
    sanitised: int = 0
    water: int = 0

    @property
    def total(self) -> int:
        """Pixels in the tile."""
        return self.valid + self.invalid


@dataclass(frozen=True)
class PublishedTile:
    """Everything the item builder needs about one published (tile, year)."""

    cell: GridCell
    year: int
    collection_id: str
    model_name: str
    model_version: str
    epsg: int
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    shape: tuple[int, int]  # (height, width)
    assets: dict[str, AssetRecord]
    sources: tuple[str, ...]  # hrefs of the source .npy / scales / landmask files
    counts: PixelCounts
    processed: datetime
    software: dict[str, str] = field(default_factory=dict)
    georef_from: str = "landmask"  # "landmask" or "rebuilt"

    @property
    def item_id(self) -> str:
        """Item id: ``{grid}_{year}`` (unique within a collection)."""
        return f"{self.cell.name}_{self.year}"

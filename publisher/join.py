"""Per-micro-watershed embedding summaries (DESIGN §5): the embedding <-> MWS join.

Rules:

* **pixel centre**: a pixel counts for an MWS when its centre is inside the polygon
  (``rasterio.features.rasterize`` with ``all_touched=False`` burns exactly those pixels);
* **one tile per pixel**: neighbouring UTM tiles overlap slightly; a pixel belongs to the tile
  whose 0.1° cell holds its centre (centre -> lon/lat -> ``floor(x*10)`` must name the tile's
  cell), so the overlap is never counted twice;
* polygons spanning several tiles and UTM zones are summed across them (float64 sums);
* only valid pixels count: code != -128 and a finite scale in (0, 1); ``valid_fraction`` = valid /
  all pixels of the MWS in the tiles read. An MWS without a valid pixel gets count 0, NaN means
  and a flag.

Per tile the work is: select the MWS that touch the tile's cell, project them to the tile's UTM
CRS, rasterise them (one label array per group of mutually non-overlapping polygons, so a pixel
in two overlapping MWS counts for both), then read the COG window in row strips and accumulate
``q * s`` per label with ``np.bincount`` band by band.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDING_DIM, EMBEDDINGS, SCALES
from tessera_stac.publisher.watersheds import UID_COLUMN

MEAN_COLUMNS = tuple(EMBEDDINGS.band_names)
STRIP_ROWS = 256
CHUNK_PIXELS = 16384  # pixels converted to float64 at once (128 x 16384 x 8 B = 16 MB)
FLAG_OK = "ok"
FLAG_NO_VALID = "no_valid_pixels"
FLAG_PARTIAL = "partial_coverage"


@dataclass(frozen=True)
class EmbeddingTile:
    """One published (tile, year): where its COGs are and their grid."""

    item_id: str
    item_href: str
    cell: GridCell
    year: int
    epsg: int
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    embeddings_href: str
    scales_href: str


def _resolve(base: str, href: str) -> str:
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        from urllib.parse import urljoin

        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def tile_from_item(item: dict[str, Any], href: str) -> EmbeddingTile:
    """Read an embedding item's grid and COG hrefs (projection v2 fields, DESIGN §3).

    Raises:
        InputError: the item lacks the projection fields or the two assets.
    """
    props = item.get("properties", {})
    try:
        grid = props.get("tessera:grid") or str(item["id"]).rsplit("_", 1)[0]
        cell = GridCell.parse(grid)
        epsg = int(str(props["proj:code"]).split(":")[-1])
        transform = tuple(float(v) for v in props["proj:transform"][:6])
        shape = tuple(int(v) for v in props["proj:shape"][:2])
        year = int(props.get("tessera:year") or str(props["start_datetime"])[:4])
        assets = item["assets"]
        emb = _resolve(href, assets[EMBEDDINGS.asset_key]["href"])
        scl = _resolve(href, assets[SCALES.asset_key]["href"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{href}: not a TESSERA embedding item ({exc})") from exc
    return EmbeddingTile(
        item_id=str(item["id"]),
        item_href=href,
        cell=cell,
        year=year,
        epsg=epsg,
        transform=transform,  # type: ignore[arg-type]
        shape=shape,  # type: ignore[arg-type]
        embeddings_href=emb,
        scales_href=scl,
    )


def cells_covering(bbox: Sequence[float]) -> list[GridCell]:
    """Every 0.1° cell overlapping ``(west, south, east, north)``."""
    west, south, east, north = bbox
    ix0, iy0 = math.floor(west * 10), math.floor(south * 10)
    ix1, iy1 = math.floor(east * 10), math.floor(north * 10)
    return [
        GridCell(round(ix / 10 + 0.05, 2), round(iy / 10 + 0.05, 2))
        for ix in range(ix0, ix1 + 1)
        for iy in range(iy0, iy1 + 1)
    ]


def find_tiles_local(
    root: Path, year: int, cells: Iterable[GridCell], collection: str | None = None
) -> list[EmbeddingTile]:
    """Embedding items of ``year`` for ``cells`` in a published catalog folder.

    Layout: ``{root}/{collection}/{year}/{grid}/{item}.json``.

    Raises:
        InputError: items of several collections (model versions) match and none was chosen.
    """
    found: list[EmbeddingTile] = []
    collections: set[str] = set()
    pattern = f"{collection}" if collection else "*"
    for cell in cells:
        for path in sorted(root.glob(f"{pattern}/{year}/{cell.name}/*.json")):
            item = json.loads(path.read_text())
            if item.get("type") != "Feature" or EMBEDDINGS.asset_key not in item.get("assets", {}):
                continue
            collections.add(path.parent.parent.parent.name)
            found.append(tile_from_item(item, str(path.resolve())))
    if len(collections) > 1:
        raise InputError(
            f"{root}: embedding items of several collections match "
            f"({', '.join(sorted(collections))}); choose one with --collection"
        )
    return found


def find_tiles_api(
    url: str,
    year: int,
    bbox: Sequence[float],
    collection: str | None = None,
    timeout: float = 60.0,
) -> list[EmbeddingTile]:
    """Embedding items of ``year`` intersecting ``bbox``, found through a STAC API search.

    Follows ``next`` links; items without an ``embeddings`` asset (watershed layers...) are
    skipped. Asset hrefs are used as the API gives them (e.g. ``http://host/data/...``, read by
    GDAL with HTTP range requests).

    Raises:
        InputError: the API cannot be searched, or several embedding collections match.
    """
    import httpx

    body: dict[str, Any] = {
        "bbox": [float(v) for v in bbox],
        "datetime": f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
        "limit": 100,
    }
    if collection:
        body["collections"] = [collection]
    found: list[EmbeddingTile] = []
    collections: set[str] = set()
    target = url.rstrip("/") + "/search"
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        while target:
            try:
                response = client.post(target, json=body)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise InputError(f"{url}: STAC API search failed: {exc}") from exc
            page = response.json()
            for item in page.get("features", []):
                if EMBEDDINGS.asset_key not in item.get("assets", {}):
                    continue
                self_href = next(
                    (ln["href"] for ln in item.get("links", []) if ln.get("rel") == "self"),
                    f"{url.rstrip('/')}/collections/{item.get('collection')}/items/{item['id']}",
                )
                collections.add(str(item.get("collection")))
                found.append(tile_from_item(item, self_href))
            nxt = next((ln for ln in page.get("links", []) if ln.get("rel") == "next"), None)
            target = nxt["href"] if nxt else ""
            body = nxt.get("body", body) if nxt else body
    if len(collections) > 1:
        raise InputError(
            f"{url}: embedding items of several collections match "
            f"({', '.join(sorted(collections))}); choose one with --collection"
        )
    return found


# ------------------------------------------------------------------------------ the join
def overlap_groups(geoms: Sequence[Any] | np.ndarray) -> list[np.ndarray]:
    """Split polygons into groups whose members' interiors never intersect (greedy colouring).

    MWS layers are meant to tile the block, but traced polygons may overlap a little; each group
    gets its own label raster so a pixel inside two MWS counts for both.
    """
    arr = np.asarray(geoms, dtype=object)
    tree = shapely.STRtree(arr)
    left, right = tree.query(arr, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    interior = shapely.relate_pattern(arr[left], arr[right], "T********")
    neighbours: dict[int, set[int]] = {}
    for a, b in zip(left[interior], right[interior], strict=True):
        neighbours.setdefault(int(a), set()).add(int(b))
        neighbours.setdefault(int(b), set()).add(int(a))
    colour = np.zeros(len(arr), dtype=np.int64)
    for i in range(len(arr)):
        used = {int(colour[j]) for j in neighbours.get(i, ()) if j < i}
        colour[i] = next(c for c in range(len(arr) + 1) if c not in used)
    return [np.flatnonzero(colour == c) for c in range(int(colour.max()) + 1)]


@dataclass
class Accumulator:
    """Running per-MWS sums (float64), valid counts and pixel counts."""

    n: int
    sums: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    pixels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sums = np.zeros((self.n, EMBEDDING_DIM), dtype=np.float64)
        self.count = np.zeros(self.n, dtype=np.int64)
        self.pixels = np.zeros(self.n, dtype=np.int64)


def _project(geoms: np.ndarray, epsg: int) -> np.ndarray:
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)

    def fwd(xy: np.ndarray) -> np.ndarray:
        x, y = to_utm.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, fwd)


def _window(tile: EmbeddingTile, geoms_utm: np.ndarray) -> tuple[int, int, int, int] | None:
    """Pixel window (row0, row1, col0, col1) holding the polygons' bounds, clipped to the tile."""
    a, _, c, _, e, f = tile.transform
    minx, miny, maxx, maxy = shapely.total_bounds(geoms_utm)
    col0 = max(0, math.floor((minx - c) / a))
    col1 = min(tile.shape[1], math.ceil((maxx - c) / a))
    row0 = max(0, math.floor((maxy - f) / e))
    row1 = min(tile.shape[0], math.ceil((miny - f) / e))
    if row0 >= row1 or col0 >= col1:
        return None
    return row0, row1, col0, col1


def _owned(tile: EmbeddingTile, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """True where the pixel centre lies in the tile's own 0.1° cell (DESIGN §5)."""
    a, b, c, d, e, f = tile.transform
    x = c + (cols + 0.5) * a + (rows + 0.5) * b
    y = f + (cols + 0.5) * d + (rows + 0.5) * e
    to_ll = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    lon, lat = to_ll.transform(x, y)
    ix = round((tile.cell.lon - 0.05) * 10)
    iy = round((tile.cell.lat - 0.05) * 10)
    result: np.ndarray = (np.floor(np.asarray(lon) * 10) == ix) & (
        np.floor(np.asarray(lat) * 10) == iy
    )
    return result


def _labels(
    tile: EmbeddingTile,
    geoms_utm: np.ndarray,
    index: np.ndarray,
    groups: list[np.ndarray],
    win: tuple[int, int, int, int],
) -> list[np.ndarray]:
    """One int32 label raster per overlap group (label = MWS index + 1, 0 = none)."""
    from affine import Affine
    from rasterio.features import rasterize

    row0, row1, col0, col1 = win
    transform = Affine(*tile.transform) @ Affine.translation(col0, row0)
    out: list[np.ndarray] = []
    member = set(index.tolist())
    where = {int(i): k for k, i in enumerate(index)}
    for group in groups:
        chosen = [int(i) for i in group if int(i) in member]
        if not chosen:
            continue
        shapes = ((geoms_utm[where[i]], i + 1) for i in chosen)
        out.append(
            rasterize(
                shapes,
                out_shape=(row1 - row0, col1 - col0),
                transform=transform,
                fill=0,
                all_touched=False,
                dtype="int32",
            )
        )
    return out


def accumulate_tile(
    tile: EmbeddingTile,
    geoms: np.ndarray,
    groups: list[np.ndarray],
    acc: Accumulator,
    tree: shapely.STRtree,
    env: dict[str, str] | None = None,
) -> bool:
    """Add one tile's owned, valid pixels to ``acc``; False when no MWS touches the tile."""
    import rasterio
    from rasterio.windows import Window

    west, south, east, north = tile.cell.bounds
    index = tree.query(shapely.box(west, south, east, north), predicate="intersects")
    if len(index) == 0:
        return False
    index = np.sort(index)
    geoms_utm = _project(geoms[index], tile.epsg)
    win = _window(tile, geoms_utm)
    if win is None:
        return False
    label_sets = _labels(tile, geoms_utm, index, groups, win)
    row0, row1, col0, col1 = win
    with (
        rasterio.Env(**(env or {})),
        rasterio.open(tile.embeddings_href) as emb_ds,
        rasterio.open(tile.scales_href) as scl_ds,
    ):
        # strips aligned on the COG's block rows, so each block is decoded once
        first = row0 - row0 % STRIP_ROWS
        for start in range(first, row1, STRIP_ROWS):
            r0, r1 = max(start, row0), min(start + STRIP_ROWS, row1)
            strip = [lab[r0 - row0 : r1 - row0] for lab in label_sets]
            if not any(s.any() for s in strip):
                continue
            window = Window(col0, r0, col1 - col0, r1 - r0)
            q = emb_ds.read(window=window)  # (128, h, w) int8
            s = scl_ds.read(1, window=window)
            _accumulate_strip(tile, strip, q, s, r0, col0, acc)
    return True


def _accumulate_strip(
    tile: EmbeddingTile,
    strips: list[np.ndarray],
    q: np.ndarray,
    s: np.ndarray,
    r0: int,
    col0: int,
    acc: Accumulator,
) -> None:
    """Accumulate one strip: owned + labelled pixels, then valid ones, summed per label."""
    bands = q.reshape(EMBEDDING_DIM, -1)
    flat_s = s.reshape(-1)
    width = s.shape[1]
    labelled = np.zeros(flat_s.shape, dtype=bool)
    for lab in strips:
        labelled |= lab.reshape(-1) > 0
    where = np.flatnonzero(labelled)
    owned = np.zeros(flat_s.shape, dtype=bool)
    owned[where[_owned(tile, r0 + where // width, col0 + where % width)]] = True
    # DESIGN §1 validity: a finite scale in (0, 1) and a real code (published nodata is -128)
    with np.errstate(invalid="ignore"):
        valid = (flat_s > 0) & (flat_s < 1) & (bands[0] != EMBEDDINGS.nodata)
    for lab in strips:
        flat = lab.reshape(-1)
        sel = np.flatnonzero((flat > 0) & owned)
        if len(sel) == 0:
            continue
        labels = flat[sel] - 1
        acc.pixels += np.bincount(labels, minlength=acc.n)
        good = valid[sel]
        _sum_by_label(bands, flat_s, sel[good], labels[good], acc)


def _sum_by_label(
    bands: np.ndarray, scales: np.ndarray, sel: np.ndarray, labels: np.ndarray, acc: Accumulator
) -> None:
    """Per label: count, and sum of dequantised vectors in float64 (sorted-group reduction).

    ``q * s`` of an int8 and a float32 is exact in float64, so one float64 matrix-vector product
    per group of pixels gives the sum of the dequantised vectors.
    """
    if len(sel) == 0:
        return
    order = np.argsort(labels, kind="stable")
    sel, labels = sel[order], labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], len(labels)]
    for start, end in zip(starts, ends, strict=True):
        label = int(labels[start])
        acc.count[label] += end - start
        for c0 in range(start, end, CHUNK_PIXELS):
            idx = sel[c0 : min(c0 + CHUNK_PIXELS, end)]
            block = bands[:, idx].astype(np.float64)
            acc.sums[label] += block @ scales[idx].astype(np.float64)


@dataclass(frozen=True)
class JoinResult:
    """Per-MWS summaries and what was read."""

    year: int
    table: gpd.GeoDataFrame  # uid, count, pixels, valid_fraction, flag, A00..A127, geometry
    tiles: tuple[EmbeddingTile, ...]
    missing_cells: tuple[str, ...]


def join_embeddings(
    frame: gpd.GeoDataFrame,
    tiles: Sequence[EmbeddingTile],
    year: int,
    on_tile: Callable[[EmbeddingTile], None] | None = None,
    env: dict[str, str] | None = None,
) -> JoinResult:
    """Summarise the embeddings of ``year`` over each MWS of ``frame`` (EPSG:4326, ``uid``).

    Args:
        frame: the MWS layer (as :func:`~tessera_stac.publisher.watersheds.read_mws_layer`
            returns it).
        tiles: embedding tiles of ``year`` (others are ignored).
        year: the year.
        on_tile: progress callback, called after each tile.
        env: GDAL configuration (e.g. S3 endpoint) for reading the COGs.

    Raises:
        InputError: no tile of ``year`` covers any MWS.
    """
    geoms = np.asarray(frame.geometry.values, dtype=object)
    tiles = [t for t in tiles if t.year == year]
    needed = {c.name for c in cells_covering(frame.total_bounds)}
    by_cell = {t.cell.name: t for t in tiles if t.cell.name in needed}
    if not by_cell:
        raise InputError(
            f"no embedding tile of {year} under the MWS layer (it needs cells like "
            f"{sorted(needed)[0]})"
        )
    groups = overlap_groups(geoms)
    tree = shapely.STRtree(geoms)
    acc = Accumulator(len(geoms))
    read: list[EmbeddingTile] = []
    for name in sorted(by_cell):
        tile = by_cell[name]
        if accumulate_tile(tile, geoms, groups, acc, tree, env):
            read.append(tile)
        if on_tile:
            on_tile(tile)
    missing = _missing_cells(geoms, set(by_cell))
    table = _summary_table(frame, acc, missing)
    return JoinResult(year, table, tuple(read), tuple(sorted({c for m in missing for c in m})))


def _missing_cells(geoms: np.ndarray, have: set[str]) -> list[set[str]]:
    """Per MWS, the cells it overlaps that have no tile."""
    out: list[set[str]] = []
    for geom in geoms:
        cells = cells_covering(geom.bounds)
        out.append(
            {
                c.name
                for c in cells
                if c.name not in have and geom.intersects(shapely.box(*c.bounds))
            }
        )
    return out


def _summary_table(
    frame: gpd.GeoDataFrame, acc: Accumulator, missing: list[set[str]]
) -> gpd.GeoDataFrame:
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (acc.sums / acc.count[:, None]).astype(np.float32)
        fraction = np.where(acc.pixels > 0, acc.count / np.maximum(acc.pixels, 1), np.nan)
    means[acc.count == 0] = np.nan
    flags = [
        FLAG_NO_VALID if n == 0 else (FLAG_PARTIAL if miss else FLAG_OK)
        for n, miss in zip(acc.count, missing, strict=True)
    ]
    data: dict[str, Any] = {
        UID_COLUMN: frame[UID_COLUMN].to_numpy(),
        "count": acc.count,
        "pixels": acc.pixels,
        "valid_fraction": fraction.astype(np.float64),
        "flag": flags,
        "missing_cells": [",".join(sorted(m)) for m in missing],
    }
    data.update({name: means[:, i] for i, name in enumerate(MEAN_COLUMNS)})
    return gpd.GeoDataFrame(data, geometry=frame.geometry.to_numpy(), crs=frame.crs)


# ------------------------------------------------------------------------------- output
JOIN_COLLECTION_ID = "corestack-mws-embeddings"
CSV_MEDIA_TYPE = "text/csv"
PNG_MEDIA_TYPE = "image/png"
SUMMARY_DESCRIPTIONS = {
    "uid": "Micro-watershed identifier (join key of the MWS layer)",
    "count": "Valid embedding pixels whose centre lies in the MWS (each pixel once)",
    "pixels": "All pixels whose centre lies in the MWS, in the tiles read",
    "valid_fraction": "count / pixels (NaN when no pixel was read)",
    "flag": "ok, partial_coverage (some cells have no tile) or no_valid_pixels",
    "missing_cells": "Comma-separated 0.1° cells under the MWS without a tile of this year",
    "geometry": "MWS outline, EPSG:4326",
}


def join_item_id(mws_item_id: str, year: int) -> str:
    """Id of the derived item: ``{mws item}_embeddings_{year}``."""
    return f"{mws_item_id}_embeddings_{year}"


def summary_columns(table: gpd.GeoDataFrame) -> list[dict[str, str]]:
    """``table:columns`` of the per-MWS table."""
    from tessera_stac.publisher.watersheds import table_columns

    described = dict(SUMMARY_DESCRIPTIONS)
    described.update({n: f"Mean dequantised embedding, dimension {n}" for n in MEAN_COLUMNS})
    return table_columns(table, described)


def create_join_collection(bbox: Sequence[float], interval: tuple[Any, Any]) -> Any:
    """The derived collection of per-MWS embedding summaries (pure)."""
    import pystac

    from tessera_stac.publisher.watersheds import CORESTACK_LICENSE, TABLE_SCHEMA

    return pystac.Collection(
        id=JOIN_COLLECTION_ID,
        title="TESSERA embeddings per CoRE Stack micro-watershed",
        description=(
            "Per-MWS summaries of the annual TESSERA embeddings: for every micro-watershed "
            "`uid`, the number of valid 10 m pixels whose centre lies inside it (each pixel "
            "counted once, in the tile whose 0.1° cell holds its centre), the valid fraction "
            "and the mean dequantised 128-d vector. One item per (block, year), derived from "
            "the corestack-mws item and the embedding items it read."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([list(bbox)]), pystac.TemporalExtent([list(interval)])
        ),
        license=CORESTACK_LICENSE,
        keywords=["TESSERA", "embeddings", "CoRE Stack", "micro-watershed"],
        stac_extensions=[TABLE_SCHEMA],
    )


def create_join_item(
    result: JoinResult,
    mws_item: dict[str, Any],
    mws_href: str,
    tile_hrefs: Sequence[str],
    assets: dict[str, Any],
    processed: Any,
) -> Any:
    """The derived STAC item of one (block, year) join (pure; hrefs passed in relative)."""
    from datetime import UTC, datetime

    import pystac

    from tessera_stac.publisher.watersheds import FILE_SCHEMA, TABLE_SCHEMA, footprint

    start = datetime(result.year, 1, 1, tzinfo=UTC)
    end = datetime(result.year, 12, 31, 23, 59, 59, tzinfo=UTC)
    table = result.table
    item = pystac.Item(
        id=join_item_id(str(mws_item["id"]), result.year),
        geometry=shapely.geometry.mapping(footprint(table)),
        bbox=[round(float(v), 8) for v in table.total_bounds],
        datetime=start,
        start_datetime=start,
        end_datetime=end,
        properties={},
        collection=JOIN_COLLECTION_ID,
        stac_extensions=[TABLE_SCHEMA, FILE_SCHEMA],
    )
    flags = table["flag"].value_counts().to_dict()
    props = item.properties
    props["title"] = f"Mean TESSERA embeddings {result.year} per MWS: {mws_item['id']}"
    props["description"] = (
        f"{len(table)} micro-watersheds; {flags.get(FLAG_OK, 0)} fully covered, "
        f"{flags.get(FLAG_PARTIAL, 0)} partly covered, {flags.get(FLAG_NO_VALID, 0)} without "
        "a valid pixel. Pixel-centre rule; each pixel counted once."
    )
    for key in ("corestack:state", "corestack:district", "corestack:block"):
        if key in mws_item.get("properties", {}):
            props[key] = mws_item["properties"][key]
    props["corestack:layer"] = "mws_embeddings"
    props["tessera:year"] = result.year
    props["processing:datetime"] = pystac.utils.datetime_to_str(processed)
    props["table:primary_geometry"] = "geometry"
    props["table:row_count"] = len(table)
    props["table:columns"] = summary_columns(table)
    for key, record in assets.items():
        asset = pystac.Asset(record.href, media_type=record.media_type, roles=list(record.roles))
        asset.extra_fields["file:size"] = record.size
        asset.extra_fields["file:checksum"] = record.checksum
        item.add_asset(key, asset)
    item.add_link(pystac.Link("derived_from", mws_href, "application/geo+json", "MWS layer item"))
    for href in tile_hrefs:
        item.add_link(pystac.Link("derived_from", href, "application/geo+json"))
    return item


def _georeference(item: Any, bbox: Sequence[float], shape: tuple[int, int]) -> None:
    """The map image is a web-mercator grid whose edges are the item's bbox (projection
    extension: its bounds in EPSG:3857 metres and its shape)."""
    from tessera_stac.catalog.constants import PROJECTION_SCHEMA_URI

    item.stac_extensions = sorted({*item.stac_extensions, PROJECTION_SCHEMA_URI})
    for key, kind in (("map", "PNG"), ("map-cog", "COG")):
        asset = item.assets[key]
        asset.title = f"Map: MWS coloured by the PCA of their mean embeddings ({kind})"
        asset.extra_fields["proj:code"] = "EPSG:3857"
        asset.extra_fields["proj:bbox"] = [round(float(v), 3) for v in bbox]
        asset.extra_fields["proj:shape"] = list(shape)


@dataclass(frozen=True)
class JoinOutput:
    """Where :func:`write_join` put the results."""

    item_id: str
    item_path: Path
    parquet: Path
    csv: Path | None
    map_png: Path
    collection_path: Path


def _rel(target: str, folder: Path) -> str:
    import os

    if "://" in target:
        return target
    rel = os.path.relpath(target, folder)
    return rel if rel.startswith(".") else f"./{rel}"


def write_join(
    result: JoinResult,
    root: Path,
    mws_item: dict[str, Any],
    mws_href: str,
    processed: Any,
    csv: bool = False,
) -> JoinOutput:
    """Write ``{root}/corestack-mws-embeddings/{item}/`` (GeoParquet, CSV, PNG map, item JSON).

    The folder is staged and swapped in whole; the collection and root catalog are updated.
    """
    import shutil

    from tessera_stac.catalog.profile import EMBEDDINGS
    from tessera_stac.publisher.overlay import overlay_cog
    from tessera_stac.publisher.pca_map import render_pca_map, render_pca_overlay
    from tessera_stac.publisher.watersheds import (
        PARQUET_MEDIA_TYPE,
        asset_record,
        collection_extent,
        item_dict,
        read_items_in,
        replace_dir,
        staging_dir,
        write_collection,
        write_json_atomic,
    )

    item_id = join_item_id(str(mws_item["id"]), result.year)
    coll_dir = root / JOIN_COLLECTION_ID
    final = coll_dir / item_id
    staged = staging_dir(coll_dir, item_id)
    try:
        table = result.table
        parquet = staged / f"{item_id}.parquet"
        table.to_parquet(parquet, index=False, compression="zstd", schema_version="1.1.0")
        records = {"data": asset_record(parquet, "data", PARQUET_MEDIA_TYPE, ("data",))}
        if csv:
            path = staged / f"{item_id}.csv"
            table.drop(columns="geometry").to_csv(path, index=False, float_format="%.7g")
            records["csv"] = asset_record(path, "csv", CSV_MEDIA_TYPE, ("data",))
        png = staged / f"{item_id}_pca.png"
        means = table[list(MEAN_COLUMNS)].to_numpy(dtype=np.float64)
        west, south, east, north = (round(float(v), 8) for v in table.total_bounds)
        shape, merc_bbox = render_pca_overlay(table, means, png, (west, south, east, north))
        records["map"] = asset_record(png, "map", PNG_MEDIA_TYPE, ("overview", "visual"))
        cog = overlay_cog(png, staged / f"{item_id}_pca.tif", merc_bbox)
        records["map-cog"] = asset_record(cog, "map-cog", EMBEDDINGS.media_type, ("visual",))
        figure = staged / f"{item_id}_pca_figure.png"
        title = f"{mws_item['id']}: MWS by PCA of mean embeddings, {result.year}"
        render_pca_map(table, means, figure, title)
        records["figure"] = asset_record(figure, "figure", PNG_MEDIA_TYPE, ("metadata",))
        item = create_join_item(
            result,
            mws_item,
            _rel(mws_href, final),
            [_rel(t.item_href, final) for t in result.tiles],
            records,
            processed,
        )
        _georeference(item, merc_bbox, shape)
        write_json_atomic(
            staged / f"{item_id}.json", item_dict(item, "../collection.json", "../../catalog.json")
        )
        replace_dir(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    items = read_items_in(coll_dir)
    bbox, times = collection_extent(items)
    collection = create_join_collection(bbox, (times[0], times[-1]))
    coll_path = write_collection(root, collection, items)
    return JoinOutput(
        item_id=item_id,
        item_path=final / f"{item_id}.json",
        parquet=final / f"{item_id}.parquet",
        csv=final / f"{item_id}.csv" if csv else None,
        map_png=final / f"{item_id}_pca.png",
        collection_path=coll_path,
    )


def mws_source(
    root: Path, item_id: str | None, file: Path | None
) -> tuple[dict[str, Any], str, Any]:
    """The MWS layer to join: a published ``corestack-mws`` item, or a layer file.

    Returns:
        (item dict, item href, checked layer). For a file, a stand-in item (id from the file
        name normalised as CoRE Stack does) with the file as its href.

    Raises:
        InputError: the item is not published under ``root`` or the file is unusable.
    """
    from tessera_stac.publisher.watersheds import (
        MWS_COLLECTION_ID,
        normalise_name,
        read_mws_layer,
    )

    if item_id is not None:
        path = root / MWS_COLLECTION_ID / item_id / f"{item_id}.json"
        if not path.exists():
            raise InputError(f"{path}: no published MWS item {item_id!r} (run watersheds publish)")
        item = json.loads(path.read_text())
        data = _resolve(str(path), item["assets"]["data"]["href"])
        return item, str(path.resolve()), read_mws_layer(data)
    assert file is not None
    layer = read_mws_layer(file)
    stem = normalise_name(file.stem.replace("-", "_"))
    return {"id": stem, "properties": {}}, str(Path(file).resolve()), layer

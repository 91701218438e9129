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
in two overlapping MWS counts for both), then read the COG window strip by strip through the
catalog's reader kernel (whole block rows, each block decompressed once; validity by the
item's recipe; exact float64 sums of ``q * s``) and accumulate per label.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer

from tessera_stac.catalog.constants import (
    CSV_MEDIA_TYPE,
    FILE_SCHEMA_URI,
    JOIN_COLLECTION_ID,
    PARQUET_MEDIA_TYPE,
    PNG_MEDIA_TYPE,
    TABLE_SCHEMA_URI,
    UID_COLUMN,
)
from tessera_stac.catalog.embedding import Quantization
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDING_DIM, EMBEDDINGS, SCALES
from tessera_stac.catalog.reader import (
    ItemRecipe,
    gdal_path,
    open_raster,
    owned_window,
    rasterio_env,
    read_ahead,
    read_window,
    sum_dequantized,
    valid_codes,
)

MEAN_COLUMNS = tuple(EMBEDDINGS.band_names)
STRIP_ROWS = 256  # a multiple of the COG block height (64 or 128): each block decoded once
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
    quantization: Quantization | None = None  # the item's recipe (None: TESSERA's)


def _resolve(base: str, href: str) -> str:
    from tessera_stac.catalog.hrefs import resolve_href

    return resolve_href(href, base if "://" in base else str(Path(base).resolve()))


def tile_from_item(item: dict[str, Any], href: str) -> EmbeddingTile:
    """Read an embedding item's grid and COG hrefs (projection fields, DESIGN §3).

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
        recipe = ItemRecipe.of(item, EMBEDDINGS.asset_key, self_href=href)
        emb = recipe.codes_href
        scl = recipe.scale_href or _resolve(href, item["assets"][SCALES.asset_key]["href"])
    except (KeyError, ValueError, TypeError, InputError) as exc:
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
        quantization=recipe.quantization,
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


class TileGrid(Protocol):
    """A tile's grid: its 0.1° cell, CRS, affine transform and shape (an embedding tile, a
    class map...)."""

    @property
    def cell(self) -> GridCell: ...
    @property
    def epsg(self) -> int: ...
    @property
    def transform(self) -> tuple[float, float, float, float, float, float]: ...
    @property
    def shape(self) -> tuple[int, int]: ...


def _project(geoms: np.ndarray, epsg: int) -> np.ndarray:
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)

    def fwd(xy: np.ndarray) -> np.ndarray:
        x, y = to_utm.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, fwd)


def _window(tile: TileGrid, geoms_utm: np.ndarray) -> tuple[int, int, int, int] | None:
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


def _labels(
    tile: TileGrid,
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


@dataclass(frozen=True)
class LabelStrip:
    """A strip of a tile's window: label rasters and which pixels the tile owns.

    Attributes:
        labels: one label raster per overlap group (MWS index + 1, 0 = none), ``(rows, cols)``.
        owned: flat bool, the pixel centre lies in the tile's own 0.1° cell (and is labelled).
        window: the strip as a rasterio ``Window``.
    """

    labels: list[np.ndarray]
    owned: np.ndarray
    window: Any


def label_strips(
    tile: TileGrid, geoms: np.ndarray, groups: list[np.ndarray], tree: shapely.STRtree
) -> Iterator[LabelStrip] | None:
    """The labelled strips of a tile (block-row aligned), or None when no MWS touches it."""
    from rasterio.windows import Window

    index = tree.query(shapely.box(*tile.cell.bounds), predicate="intersects")
    if len(index) == 0:
        return None
    index = np.sort(index)
    geoms_utm = _project(geoms[index], tile.epsg)
    win = _window(tile, geoms_utm)
    if win is None:
        return None
    label_sets = _labels(tile, geoms_utm, index, groups, win)
    row0, row1, col0, col1 = win

    def strips() -> Iterator[LabelStrip]:
        # strips aligned on the COG's block rows, so each block is decoded once
        for start in range(row0 - row0 % STRIP_ROWS, row1, STRIP_ROWS):
            r0, r1 = max(start, row0), min(start + STRIP_ROWS, row1)
            strip = [lab[r0 - row0 : r1 - row0] for lab in label_sets]
            if not any(s.any() for s in strip):
                continue
            width = col1 - col0
            labelled = np.zeros((r1 - r0) * width, dtype=bool)
            for lab in strip:
                labelled |= lab.reshape(-1) > 0
            owned = labelled & owned_window(
                tile.transform, f"EPSG:{tile.epsg}", tile.cell, (r0, r1, col0, col1)
            ).reshape(-1)
            yield LabelStrip(strip, owned, Window(col0, r0, width, r1 - r0))

    return strips()


def accumulate_tile(
    tile: EmbeddingTile,
    geoms: np.ndarray,
    groups: list[np.ndarray],
    acc: Accumulator,
    tree: shapely.STRtree,
    env: dict[str, str] | None = None,
) -> bool:
    """Add one tile's owned, valid pixels to ``acc``; False when no MWS touches the tile."""
    strips = label_strips(tile, geoms, groups, tree)
    if strips is None:
        return False
    q = tile.quantization or _tessera_quantization()
    with (
        rasterio_env(env),
        open_raster(gdal_path(tile.embeddings_href), tile.embeddings_href) as emb_ds,
        open_raster(gdal_path(tile.scales_href), tile.scales_href) as scl_ds,
    ):

        def read(strip: LabelStrip) -> tuple[LabelStrip, np.ndarray, np.ndarray]:
            (r0, r1), (c0, c1) = strip.window.toranges()
            codes = read_window(emb_ds, r0, r1, c0, c1)  # (h, w, dims)
            scales = read_window(scl_ds, r0, r1, c0, c1)[..., (q.scale_band or 1) - 1]
            return strip, codes, scales

        # block-row aligned (each COG block decoded once), the next strip read meanwhile
        for strip, codes, scales in read_ahead(partial(read, s) for s in strips):
            _accumulate_strip(strip, q, codes, scales, acc)
    return True


def _tessera_quantization() -> Quantization:
    from tessera_stac.catalog.stac import embeddings_quantization

    return embeddings_quantization()


def _accumulate_strip(
    strip: LabelStrip,
    q: Quantization,
    codes: np.ndarray,
    scales: np.ndarray | None,
    acc: Accumulator,
) -> None:
    """Accumulate one strip: owned + labelled pixels, validity and sums by the kernel."""
    pick = np.flatnonzero(strip.owned)
    if len(pick) == 0:
        return
    # the pixels of interest only: (k, dims) codes and (k,) scales, validity by the recipe
    pixels = codes.reshape(-1, codes.shape[-1])[pick]
    pscales = None if scales is None else scales.reshape(-1)[pick]
    valid = np.zeros(strip.owned.shape, dtype=bool)
    valid[pick] = valid_codes(pixels, pscales, q)
    slot = np.full(strip.owned.shape, -1, dtype=np.int64)
    slot[pick] = np.arange(len(pick))
    for lab in strip.labels:
        flat = lab.reshape(-1)
        sel = np.flatnonzero((flat > 0) & strip.owned)
        if len(sel) == 0:
            continue
        labels = flat[sel] - 1
        acc.pixels += np.bincount(labels, minlength=acc.n)
        good = valid[sel]
        _sum_by_label(pixels, pscales, slot[sel[good]], labels[good], q, acc)


def _sum_by_label(
    pixels: np.ndarray,
    scales: np.ndarray | None,
    rows: np.ndarray,
    labels: np.ndarray,
    q: Quantization,
    acc: Accumulator,
) -> None:
    """Per label: count, and exact float64 sum of the dequantised vectors (sorted groups)."""
    if len(rows) == 0:
        return
    order = np.argsort(labels, kind="stable")
    rows, labels = rows[order], labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], len(labels)]
    for start, end in zip(starts, ends, strict=True):
        label = int(labels[start])
        acc.count[label] += end - start
        idx = rows[start:end]
        acc.sums[label] += sum_dequantized(pixels[idx], None if scales is None else scales[idx], q)


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
        frame: the MWS layer (as :func:`~tessera_stac.publisher.watersheds.layer.read_mws_layer`
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
    from tessera_stac.publisher.watersheds.layer import table_columns

    described = dict(SUMMARY_DESCRIPTIONS)
    described.update({n: f"Mean dequantised embedding, dimension {n}" for n in MEAN_COLUMNS})
    return table_columns(table, described)


def derived_table_collection(
    collection_id: str,
    title: str,
    description: str,
    keywords: list[str],
    bbox: Sequence[float],
    interval: tuple[Any, Any],
) -> Any:
    """A collection of derived per-MWS tables (the joins, the change tables; pure)."""
    from tessera_stac.publisher.watersheds.layer import corestack_collection

    return corestack_collection(collection_id, title, description, (bbox, interval), keywords)


def create_join_collection(bbox: Sequence[float], interval: tuple[Any, Any]) -> Any:
    """The derived collection of per-MWS embedding summaries (pure)."""
    return derived_table_collection(
        JOIN_COLLECTION_ID,
        "TESSERA embeddings per CoRE Stack micro-watershed",
        "Per-MWS summaries of the annual TESSERA embeddings: for every micro-watershed "
        "`uid`, the number of valid 10 m pixels whose centre lies inside it (each pixel "
        "counted once, in the tile whose 0.1° cell holds its centre), the valid fraction "
        "and the mean dequantised 128-d vector. One item per (block, year), derived from "
        "the corestack-mws item and the embedding items it read.",
        ["TESSERA", "embeddings", "CoRE Stack", "micro-watershed"],
        bbox,
        interval,
    )


def create_join_item(
    result: JoinResult,
    mws_item: dict[str, Any],
    mws_href: str | None,
    tile_hrefs: Sequence[str | None],
    assets: dict[str, Any],
    processed: Any,
) -> Any:
    """The derived STAC item of one (block, year) join (pure; hrefs passed in relative)."""
    from datetime import UTC, datetime

    import pystac

    from tessera_stac.publisher.watersheds.layer import footprint

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
        stac_extensions=[TABLE_SCHEMA_URI, FILE_SCHEMA_URI],
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
    add_file_assets(item, assets)
    if mws_href:
        link = pystac.Link("derived_from", mws_href, "application/geo+json", "MWS layer item")
        item.add_link(link)
    else:  # a layer file outside the catalog: its identity, never its local path
        props["corestack:mws_source"] = str(mws_item["id"])
    for href in filter(None, tile_hrefs):
        item.add_link(pystac.Link("derived_from", href, "application/geo+json"))
    unlinked = [t.item_id for t, href in zip(result.tiles, tile_hrefs, strict=True) if not href]
    if unlinked:  # embedding items outside the catalog: their ids, never their local paths
        props["tessera:source_items"] = unlinked
    return item


def add_file_assets(item: Any, assets: dict[str, Any]) -> None:
    """Add asset records (href, media type, roles, ``file:size``/``file:checksum``)."""
    import pystac

    for key, record in assets.items():
        asset = pystac.Asset(record.href, media_type=record.media_type, roles=list(record.roles))
        asset.extra_fields["file:size"] = record.size
        asset.extra_fields["file:checksum"] = record.checksum
        item.add_asset(key, asset)


def _georeference(item: Any, bbox: Sequence[float], shape: tuple[int, int]) -> None:
    """The map image is a web-mercator grid whose edges are the item's bbox (projection
    extension: its bounds in EPSG:3857 metres and its shape)."""
    from tessera_stac.catalog.constants import PROJECTION_SCHEMA_URI
    from tessera_stac.catalog.stac import projection_code_fields

    item.stac_extensions = sorted({*item.stac_extensions, PROJECTION_SCHEMA_URI})
    for key, kind in (("map", "PNG"), ("map-cog", "COG")):
        asset = item.assets[key]
        asset.title = f"Map: MWS coloured by the PCA of their mean embeddings ({kind})"
        asset.extra_fields.update(projection_code_fields("EPSG:3857"))
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


def _rel(target: str, folder: Path, root: Path) -> str | None:
    """Href from ``folder`` to ``target``: public URLs kept, local files inside the catalog
    ``root`` made relative, other local paths None (never published)."""
    import os

    from tessera_stac.catalog.hrefs import is_public

    if is_public(target):
        return target
    path, base = Path(target).resolve(), root.resolve()
    if not path.is_relative_to(base):
        return None
    rel = os.path.relpath(path, folder.resolve())
    return rel if rel.startswith(".") else f"./{rel}"


def write_derived_item(
    root: Path,
    collection_id: str,
    item_id: str,
    fill: Callable[[Path, Path], dict[str, Any]],
    collection: Callable[[list[float], tuple[Any, Any]], Any],
) -> Path:
    """Publish ``{root}/{collection_id}/{item_id}/`` whole (staged, then swapped in) and rewrite
    the collection and the root catalog from the items now there.

    ``fill(staged, final)`` writes the files into ``staged`` and returns the item dict (hrefs
    relative to ``final``). Returns the collection's path.
    """
    from tessera_stac.publisher.watersheds.layer import open_stores, publish_item_folder

    final = root / collection_id / item_id
    stores = open_stores(root, None)
    publish_item_folder(
        stores, collection_id, item_id, lambda staged: fill(staged, final), collection
    )
    return root / collection_id / "collection.json"


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
    from tessera_stac.catalog.profile import EMBEDDINGS
    from tessera_stac.publisher.join.pca_map import render_pca_map, render_pca_overlay
    from tessera_stac.publisher.overlay import overlay_cog
    from tessera_stac.publisher.watersheds.layer import asset_record

    item_id = join_item_id(str(mws_item["id"]), result.year)
    final = root / JOIN_COLLECTION_ID / item_id

    def fill(staged: Path, final: Path) -> dict[str, Any]:
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
            _rel(mws_href, final, root),
            [_rel(t.item_href, final, root) for t in result.tiles],
            records,
            processed,
        )
        _georeference(item, merc_bbox, shape)
        return dict(item.to_dict(include_self_link=False, transform_hrefs=False))

    write_derived_item(root, JOIN_COLLECTION_ID, item_id, fill, create_join_collection)
    return JoinOutput(
        item_id=item_id,
        item_path=final / f"{item_id}.json",
        parquet=final / f"{item_id}.parquet",
        csv=final / f"{item_id}.csv" if csv else None,
        map_png=final / f"{item_id}_pca.png",
        collection_path=root / JOIN_COLLECTION_ID / "collection.json",
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
    from tessera_stac.catalog.constants import MWS_COLLECTION_ID
    from tessera_stac.publisher.watersheds.layer import normalise_name, read_mws_layer

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

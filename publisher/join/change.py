"""Per-micro-watershed change between two years (DESIGN §7), from the published COGs.

For every MWS: the cosine distance between its two mean vectors and the share of its pixels
whose own cosine distance exceeds a threshold (:mod:`tessera_stac.catalog.change`), over the
pixels valid in both years. Pixels are assigned as in the join (DESIGN §5): centre inside the
polygon, each pixel in the tile whose 0.1° cell holds its centre, summed across tiles and UTM
zones. Both years of a cell share one grid (the tile's), so pixels pair by index.

Output: a GeoParquet table keyed by ``uid`` (CSV on request), published as an item of the
``corestack-mws-change`` collection, ``derived_from`` the two years' join items (and the MWS
item and embedding items read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from tessera_stac.catalog.change import DEFAULT_THRESHOLD, ChangeSums
from tessera_stac.catalog.constants import CHANGE_COLLECTION_ID, JOIN_COLLECTION_ID, UID_COLUMN
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.profile import EMBEDDING_DIM, EMBEDDINGS
from tessera_stac.catalog.reader import gdal_path, open_raster, rasterio_env, read_window
from tessera_stac.publisher.join.join import (
    EmbeddingTile,
    _rel,
    add_file_assets,
    cells_covering,
    derived_table_collection,
    join_item_id,
    label_strips,
    overlap_groups,
    write_derived_item,
)

CHANGE_DESCRIPTIONS = {
    "uid": "Micro-watershed identifier (join key of the MWS layer)",
    "distance": "Cosine distance between the MWS's mean vectors of the two years",
    "changed_share": "Share of its pixels whose own cosine distance exceeds the threshold",
    "pixels": "Pixels valid in both years whose centre lies in the MWS (each pixel once)",
    "changed_pixels": "Pixels whose cosine distance exceeds the threshold",
    "geometry": "MWS outline, EPSG:4326",
}


def dequantised(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``q * s`` as (pixels, 128) float32 with NaN rows where invalid (the join's rule:
    a finite scale in (0, 1) and a real code)."""
    with np.errstate(invalid="ignore"):
        valid = (s > 0) & (s < 1) & (q[0] != EMBEDDINGS.nodata)
    values = q.T.astype(np.float32) * s[:, None].astype(np.float32)
    values[~valid] = np.nan
    return values


@dataclass(frozen=True)
class ChangeResult:
    """Per-MWS change and what was read."""

    year_from: int
    year_to: int
    threshold: float
    table: gpd.GeoDataFrame  # uid, distance, changed_share, pixels, changed_pixels, geometry
    tiles: tuple[EmbeddingTile, ...]


def _pairs(
    tiles_from: Sequence[EmbeddingTile], tiles_to: Sequence[EmbeddingTile], needed: set[str]
) -> list[tuple[EmbeddingTile, EmbeddingTile]]:
    by_cell = {t.cell.name: t for t in tiles_to}
    pairs = []
    for a in sorted(tiles_from, key=lambda t: t.cell.name):
        b = by_cell.get(a.cell.name)
        if b is None or a.cell.name not in needed:
            continue
        if (a.epsg, a.shape) != (b.epsg, b.shape) or not np.allclose(a.transform, b.transform):
            raise InputError(
                f"{a.cell.name}: the grids of {a.item_id} and {b.item_id} differ; "
                "pixels cannot be paired"
            )
        pairs.append((a, b))
    return pairs


@contextmanager
def open_pair(
    a: EmbeddingTile, b: EmbeddingTile, env: dict[str, str] | None = None
) -> Iterator[Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """Open two years of one cell through the reader kernel (its GDAL options and paths);
    yield ``read(window) -> (codes_a, scales_a, codes_b, scales_b)``, codes as
    ``(dims, pixels)`` and scales as ``(pixels,)``."""
    with rasterio_env(env), ExitStack() as stack:
        ds = [
            stack.enter_context(open_raster(gdal_path(href), href))
            for href in (a.embeddings_href, a.scales_href, b.embeddings_href, b.scales_href)
        ]

        def read(window: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            # a rasterio Window or ((row_start, row_stop), (col_start, col_stop))
            (r0, r1), (c0, c1) = window if isinstance(window, tuple) else window.toranges()
            qa, sa, qb, sb = (read_window(d, r0, r1, c0, c1) for d in ds)
            return (
                qa.reshape(-1, qa.shape[-1]).T,
                sa[..., 0].reshape(-1),
                qb.reshape(-1, qb.shape[-1]).T,
                sb[..., 0].reshape(-1),
            )

        yield read


def accumulate_pair(
    a: EmbeddingTile,
    b: EmbeddingTile,
    geoms: np.ndarray,
    groups: list[np.ndarray],
    sums: ChangeSums,
    tree: shapely.STRtree,
    env: dict[str, str] | None = None,
) -> bool:
    """Add one cell's owned pixels, valid in both years, to ``sums``."""
    strips = label_strips(a, geoms, groups, tree)
    if strips is None:
        return False
    with open_pair(a, b, env) as read:
        for strip in strips:
            qa, sa, qb, sb = read(strip.window)
            for lab in strip.labels:
                flat = lab.reshape(-1)
                sel = np.flatnonzero((flat > 0) & strip.owned)
                if len(sel):
                    sums.add(
                        flat[sel] - 1,
                        dequantised(qa[:, sel], sa[sel]),
                        dequantised(qb[:, sel], sb[sel]),
                    )
    return True


def change_watersheds(
    frame: gpd.GeoDataFrame,
    tiles_from: Sequence[EmbeddingTile],
    tiles_to: Sequence[EmbeddingTile],
    year_from: int,
    year_to: int,
    threshold: float = DEFAULT_THRESHOLD,
    env: dict[str, str] | None = None,
    on_tile: Callable[[EmbeddingTile], None] | None = None,
) -> ChangeResult:
    """Change of every MWS of ``frame`` between ``year_from`` and ``year_to``.

    Raises:
        InputError: no cell under the layer has a tile in both years.
    """
    geoms = np.asarray(frame.geometry.values, dtype=object)
    needed = {c.name for c in cells_covering(frame.total_bounds)}
    pairs = _pairs(
        [t for t in tiles_from if t.year == year_from],
        [t for t in tiles_to if t.year == year_to],
        needed,
    )
    if not pairs:
        raise InputError(f"no cell under the MWS layer has tiles of both {year_from} and {year_to}")
    groups = overlap_groups(geoms)
    tree = shapely.STRtree(geoms)
    sums = ChangeSums(len(geoms), EMBEDDING_DIM, threshold)
    read: list[EmbeddingTile] = []
    for a, b in pairs:
        if accumulate_pair(a, b, geoms, groups, sums, tree, env):
            read.extend((a, b))
        if on_tile:
            on_tile(a)
    results = sums.results()
    table = gpd.GeoDataFrame(
        {
            UID_COLUMN: frame[UID_COLUMN].to_numpy(),
            "distance": np.array([r.distance for r in results], dtype=np.float64),
            "changed_share": np.array([r.changed_share for r in results], dtype=np.float64),
            "pixels": sums.pixels.copy(),
            "changed_pixels": sums.changed.copy(),
        },
        geometry=frame.geometry.to_numpy(),
        crs=frame.crs,
    )
    return ChangeResult(year_from, year_to, threshold, table, tuple(read))


# ------------------------------------------------------------------------------- output
def change_item_id(mws_item_id: str, year_from: int, year_to: int) -> str:
    """``{mws item}_change_{from}_{to}``."""
    return f"{mws_item_id}_change_{year_from}_{year_to}"


@dataclass(frozen=True)
class ChangeOutput:
    """Where :func:`write_change` put the results."""

    item_id: str
    item_path: Path
    parquet: Path
    csv: Path | None
    collection_path: Path


def _create_item(
    result: ChangeResult,
    mws_item: dict[str, Any],
    links: list[tuple[str | None, str]],
    assets: dict[str, Any],
    processed: Any,
) -> Any:
    from datetime import UTC, datetime

    import pystac

    from tessera_stac.catalog.constants import FILE_SCHEMA_URI as FILE_SCHEMA
    from tessera_stac.catalog.constants import TABLE_SCHEMA_URI as TABLE_SCHEMA
    from tessera_stac.publisher.watersheds.layer import footprint, table_columns

    table = result.table
    item = pystac.Item(
        id=change_item_id(str(mws_item["id"]), result.year_from, result.year_to),
        geometry=shapely.geometry.mapping(footprint(table)),
        bbox=[round(float(v), 8) for v in table.total_bounds],
        datetime=datetime(result.year_to, 1, 1, tzinfo=UTC),
        start_datetime=datetime(result.year_from, 1, 1, tzinfo=UTC),
        end_datetime=datetime(result.year_to, 12, 31, 23, 59, 59, tzinfo=UTC),
        properties={},
        collection=CHANGE_COLLECTION_ID,
        stac_extensions=[TABLE_SCHEMA, FILE_SCHEMA],
    )
    props = item.properties
    props["title"] = (
        f"TESSERA change {result.year_from}->{result.year_to} per MWS: {mws_item['id']}"
    )
    props["description"] = (
        f"{len(table)} micro-watersheds: cosine distance of the mean embeddings of "
        f"{result.year_from} and {result.year_to}, and the share of pixels whose own distance "
        f"exceeds {result.threshold:g} (pixels valid in both years, pixel-centre rule)."
    )
    for key in ("corestack:state", "corestack:district", "corestack:block"):
        if key in mws_item.get("properties", {}):
            props[key] = mws_item["properties"][key]
    props["corestack:layer"] = "mws_change"
    props["tessera:year_from"] = result.year_from
    props["tessera:year_to"] = result.year_to
    props["tessera:change_threshold"] = result.threshold
    props["processing:datetime"] = pystac.utils.datetime_to_str(processed)
    props["table:primary_geometry"] = "geometry"
    props["table:row_count"] = len(table)
    props["table:columns"] = table_columns(table, CHANGE_DESCRIPTIONS)
    add_file_assets(item, assets)
    for href, title in links:
        if href:  # a source outside the catalog is never linked by its local path
            item.add_link(pystac.Link("derived_from", href, "application/geo+json", title))
    return item


def create_change_collection(bbox: Sequence[float], interval: tuple[Any, Any]) -> Any:
    """The derived collection of per-MWS change tables (pure)."""
    return derived_table_collection(
        CHANGE_COLLECTION_ID,
        "TESSERA change per CoRE Stack micro-watershed",
        "How each micro-watershed changed between two years of TESSERA embeddings: the "
        "cosine distance of its mean vectors and the share of its pixels whose own cosine "
        "distance exceeds a threshold. One item per (block, year pair), derived from the "
        "two years' per-MWS embedding items.",
        ["TESSERA", "embeddings", "change", "CoRE Stack", "micro-watershed"],
        bbox,
        interval,
    )


def write_change(
    result: ChangeResult,
    root: Path,
    mws_item: dict[str, Any],
    mws_href: str,
    processed: Any,
    csv: bool = False,
) -> ChangeOutput:
    """Write ``{root}/corestack-mws-change/{item}/`` (GeoParquet, optional CSV, item JSON).

    The item links ``derived_from`` both years' join items (which must be published under
    ``root``), the MWS item and the embedding items read.

    Raises:
        InputError: a year's join is not published under ``root``.
    """
    from tessera_stac.catalog.constants import PARQUET_MEDIA_TYPE
    from tessera_stac.publisher.watersheds.layer import asset_record

    item_id = change_item_id(str(mws_item["id"]), result.year_from, result.year_to)
    joins = []
    for year in (result.year_from, result.year_to):
        join_id = join_item_id(str(mws_item["id"]), year)
        join_path = root / JOIN_COLLECTION_ID / join_id / f"{join_id}.json"
        if not join_path.exists():
            raise InputError(
                f"{join_path}: no join of {year} for {mws_item['id']} (run watersheds join "
                f"--year {year} first: the change item is derived from both joins)"
            )
        joins.append((join_path, year))

    def fill(staged: Path, final: Path) -> dict[str, Any]:
        parquet = staged / f"{item_id}.parquet"
        result.table.to_parquet(parquet, index=False, compression="zstd", schema_version="1.1.0")
        records = {"data": asset_record(parquet, "data", PARQUET_MEDIA_TYPE, ("data",))}
        if csv:
            path = staged / f"{item_id}.csv"
            result.table.drop(columns="geometry").to_csv(path, index=False, float_format="%.9g")
            records["csv"] = asset_record(path, "csv", "text/csv", ("data",))
        links = [(_rel(str(p), final, root), f"per-MWS embeddings {y}") for p, y in joins]
        links.append((_rel(mws_href, final, root), "MWS layer item"))
        links.extend((_rel(t.item_href, final, root), t.item_id) for t in result.tiles)
        item = _create_item(result, mws_item, links, records, processed)
        return dict(item.to_dict(include_self_link=False, transform_hrefs=False))

    coll_path = write_derived_item(
        root, CHANGE_COLLECTION_ID, item_id, fill, create_change_collection
    )
    final = root / CHANGE_COLLECTION_ID / item_id
    return ChangeOutput(
        item_id=item_id,
        item_path=final / f"{item_id}.json",
        parquet=final / f"{item_id}.parquet",
        csv=final / f"{item_id}.csv" if csv else None,
        collection_path=coll_path,
    )

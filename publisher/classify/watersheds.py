"""Land cover per micro-watershed: the class maps of a head aggregated over an MWS layer.

For every MWS ``uid`` and every class of the head: the hectares of its pixels and their share of
the MWS's classified area (``{class}_in_ha``, ``{class}_percent``: CoRE Stack's unit suffixes).
Pixels are assigned exactly as in the embedding join (DESIGN §5, :mod:`..join.join`): a pixel
counts when its centre lies inside the polygon (``rasterize``, ``all_touched=False``), and only in
the tile whose 0.1° cell holds its centre (the reader kernel's lattice ownership,
:func:`~tessera_stac.catalog.reader.owned_window`), summed across tiles and UTM zones; a pixel
inside two overlapping MWS counts for both. Hectares are pixel counts times the pixel area of the
tile's grid (10 m: 0.01 ha). Class 0 is nodata (water, invalid embeddings): its area is reported
as ``nodata_in_ha`` and left out of the percents, which sum to 100 over the classified area.

Over several years (``--from/--to``): one table per year, a change table (``{class}_change_in_ha``
= hectares in the last year minus the first) and a JSON in CoRE Stack's time-series shape: a
list of rows ``{"uid", "annual": {"time": [years], "<metric>": [...]}, "annual_units": {...}}``.

Everything is published as items of ``corestack-mws-classes``, ``derived_from`` the MWS item and
the class items read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from tessera_stac.catalog.constants import (
    CLASSES_ASSET,
    CLASSES_COLLECTION_PREFIX,
    CSV_MEDIA_TYPE,
    FILE_SCHEMA_URI,
    JSON_MEDIA_TYPE,
    MWS_CLASSES_COLLECTION_ID,
    PARQUET_MEDIA_TYPE,
    TABLE_SCHEMA_URI,
    UID_COLUMN,
    VALUE_ASSET,
)
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.reader import (
    gdal_path,
    open_raster,
    rasterio_env,
    read_ahead,
    read_window,
)
from tessera_stac.publisher.join.join import (
    FLAG_NO_VALID,
    FLAG_OK,
    FLAG_PARTIAL,
    LabelStrip,
    _missing_cells,
    _rel,
    add_file_assets,
    cells_covering,
    derived_table_collection,
    label_strips,
    overlap_groups,
    write_derived_item,
)

#: class codes of a uint8 class map (0 = nodata)
NCODES = 256
NODATA_CLASS = 0
MAX_YEARS = 20


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ClassInfo:
    """One class of a head: its uint8 value, name, colour (``#rrggbb``) and column stem."""

    value: int
    name: str
    color: str
    column: str


@dataclass(frozen=True)
class ClassTile:
    """One published class map (tile, year): where its COG is and its grid."""

    item_id: str
    item_href: str
    cell: GridCell
    year: int
    epsg: int
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    classes_href: str
    value: bool = False  # a regression map: float32 values (NaN nodata), not uint8 classes

    @property
    def pixel_ha(self) -> float:
        """Area of one pixel in hectares (``|a e - b d|`` square metres / 10 000)."""
        a, b, _, d, e, _ = self.transform
        return abs(a * e - b * d) / 10_000.0


def check_model_name(name: str) -> str:
    """A head name usable in ids and paths (the rule of ``catalog/heads.py``).

    Raises:
        InputError: anything else (a path, markup, an empty name...).
    """
    from tessera_stac.catalog.heads import check_name

    return check_name(name)


def classes_collection_id(model: str) -> str:
    """``tessera-classes-{model}``."""
    return f"{CLASSES_COLLECTION_PREFIX}{check_model_name(model)}"


def column_stem(name: str) -> str:
    """A class name as a column stem: the heads' ``class_slug`` (lowercase, spaces and ``-``
    as ``_``), other characters dropped to ``_`` too."""
    from tessera_stac.catalog.heads import class_slug

    stem = re.sub(r"[^a-z0-9_]+", "_", class_slug(str(name))).strip("_")
    return stem or "class"


def parse_classes(entries: Iterable[dict[str, Any]]) -> list[ClassInfo]:
    """``classification:classes`` (or a head's ``classes``) as :class:`ClassInfo`, by value.

    Entries marked ``nodata`` and value 0 are left out; colours come from ``color_hint``
    (``rrggbb``) or ``color`` (``#rrggbb``); column stems are made unique.

    Raises:
        InputError: no class, or a value outside 1..254.
    """
    out: list[ClassInfo] = []
    used: set[str] = set()
    for entry in sorted(entries, key=lambda e: int(e["value"])):
        value = int(entry["value"])
        if entry.get("nodata") or value == NODATA_CLASS:
            continue
        if not 1 <= value <= 254:
            raise InputError(f"class value {value} outside 1..254")
        name = str(entry.get("name") or entry.get("description") or f"class {value}")
        hint = str(entry.get("color_hint") or entry.get("color") or "808080").lstrip("#")
        stem = column_stem(name)
        if stem in used or stem in ("classified", "nodata"):
            stem = f"{stem}_{value}"
        used.add(stem)
        out.append(ClassInfo(value, name, f"#{hint.lower()}", stem))
    if not out:
        raise InputError("the class maps declare no class (classification:classes is empty)")
    return out


def _grid_fields(item: dict[str, Any]) -> dict[str, Any]:
    """Projection fields of the classes (or value) asset, else of the item."""
    assets = item.get("assets", {})
    asset = assets.get(CLASSES_ASSET) or assets.get(VALUE_ASSET) or {}
    props = item.get("properties", {})
    return {
        k: asset.get(k, props.get(k))
        for k in ("proj:code", "proj:epsg", "proj:transform", "proj:shape")
    }


def tile_from_class_item(item: dict[str, Any], href: str) -> ClassTile:
    """Read a class item's grid and COG href.

    Raises:
        InputError: the item lacks the classes asset or the projection fields.
    """
    from tessera_stac.publisher.join.join import _resolve

    props = item.get("properties", {})
    try:
        grid = _grid_fields(item)
        code = grid["proj:code"] or f"EPSG:{grid['proj:epsg']}"
        epsg = int(str(code).split(":")[-1])
        transform = tuple(float(v) for v in grid["proj:transform"][:6])
        shape = tuple(int(v) for v in grid["proj:shape"][:2])
        year = int(
            props.get("tessera:year") or str(props.get("start_datetime") or props["datetime"])[:4]
        )
        if props.get("tessera:grid"):
            cell = GridCell.parse(str(props["tessera:grid"]))
        else:
            west, south, east, north = (float(v) for v in item["bbox"][:4])
            cell = GridCell.containing((west + east) / 2, (south + north) / 2)
        assets = item["assets"]
        value = CLASSES_ASSET not in assets and VALUE_ASSET in assets
        classes_href = _resolve(href, assets[VALUE_ASSET if value else CLASSES_ASSET]["href"])
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{href}: not a class map item ({exc!r})") from exc
    return ClassTile(
        item_id=str(item["id"]),
        item_href=href,
        cell=cell,
        year=year,
        epsg=epsg,
        transform=transform,  # type: ignore[arg-type]
        shape=shape,  # type: ignore[arg-type]
        classes_href=classes_href,
        value=value,
    )


def find_class_tiles_local(
    root: Path, model: str, years: Sequence[int], bbox: Sequence[float] | None = None
) -> tuple[dict[int, list[ClassTile]], list[ClassInfo]]:
    """The class items of ``model`` under ``{root}/tessera-classes-{model}/`` (any layout
    below it), by year, and the classes they declare (which must agree).

    Raises:
        InputError: no class map of the model, or items whose classes differ.
    """
    folder = root / classes_collection_id(model)
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no class maps of model {model!r} (run `tessera-stac classify map`)"
        )
    wanted = set(years)
    cells = {c.name for c in cells_covering(bbox)} if bbox is not None else None
    by_year: dict[int, list[ClassTile]] = {y: [] for y in sorted(wanted)}
    classes: list[ClassInfo] | None = None
    for path in sorted(folder.rglob("*.json")):
        if path.name == "collection.json":
            continue
        item = json.loads(path.read_text())
        assets = item.get("assets", {})
        if item.get("type") != "Feature" or not ({CLASSES_ASSET, VALUE_ASSET} & set(assets)):
            continue
        tile = tile_from_class_item(item, str(path.resolve()))
        if tile.year not in wanted or (cells is not None and tile.cell.name not in cells):
            continue
        found = (
            [VALUE_CLASS]
            if tile.value
            else parse_classes(assets[CLASSES_ASSET].get("classification:classes", []))
        )
        if classes is None:
            classes = found
        elif [(c.value, c.name) for c in found] != [(c.value, c.name) for c in classes]:
            raise InputError(f"{path}: its classes differ from the other class maps of {model}")
        by_year[tile.year].append(tile)
    if classes is None:
        raise InputError(
            f"{folder}: no class map of {model!r} for {', '.join(map(str, sorted(wanted)))}"
            " under the MWS layer"
        )
    return by_year, classes


#: the one "class" of a regression map (its values are averaged per MWS, ``value_mean``)
VALUE_CLASS = ClassInfo(0, "value", "#808080", "value")


# ------------------------------------------------------------------------ aggregation
@dataclass
class ClassCounts:
    """Running per-MWS hectares by class code (float64 ``(n, 256)``) and pixel counts."""

    n: int

    def __post_init__(self) -> None:
        self.hectares = np.zeros((self.n, NCODES), dtype=np.float64)
        self.pixels = np.zeros(self.n, dtype=np.int64)
        # regression maps: float64 sum of the finite values and their hectares (code 1)
        self.value_sum = np.zeros(self.n, dtype=np.float64)
        self.value_count = np.zeros(self.n, dtype=np.int64)


def _count_strip(strip: LabelStrip, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts ``(n, 256)`` by MWS and class, and pixels per MWS, of one strip."""
    flat = codes.reshape(-1).astype(np.int64)
    counts = np.zeros(n * NCODES, dtype=np.int64)
    pixels = np.zeros(n, dtype=np.int64)
    for lab in strip.labels:
        lf = lab.reshape(-1)
        sel = np.flatnonzero((lf > 0) & strip.owned)
        if len(sel) == 0:
            continue
        labels = lf[sel].astype(np.int64) - 1
        pixels += np.bincount(labels, minlength=n)
        counts += np.bincount(labels * NCODES + flat[sel], minlength=n * NCODES)
    return counts.reshape(n, NCODES), pixels


def _value_strip(strip: LabelStrip, values: np.ndarray, acc: ClassCounts) -> np.ndarray:
    """Add a strip of a regression map (sums of finite values, counts); return its per-MWS
    pixel counts by code (1 = a value, 0 = nodata) as ``(n, 256)``."""
    flat = values.reshape(-1)
    codes = np.isfinite(flat).astype(np.int64)
    n = acc.n
    counts = np.zeros(n * NCODES, dtype=np.int64)
    for lab in strip.labels:
        lf = lab.reshape(-1)
        sel = np.flatnonzero((lf > 0) & strip.owned)
        if len(sel) == 0:
            continue
        labels = lf[sel].astype(np.int64) - 1
        acc.pixels += np.bincount(labels, minlength=n)
        counts += np.bincount(labels * NCODES + codes[sel], minlength=n * NCODES)
        good = codes[sel] == 1
        acc.value_sum += np.bincount(
            labels[good], weights=flat[sel][good].astype(np.float64), minlength=n
        )
        acc.value_count += np.bincount(labels[good], minlength=n)
    return counts.reshape(n, NCODES)


def accumulate_class_tile(
    tile: ClassTile,
    geoms: np.ndarray,
    groups: list[np.ndarray],
    acc: ClassCounts,
    tree: shapely.STRtree,
    env: dict[str, str] | None = None,
) -> bool:
    """Add one class map's owned pixels to ``acc``; False when no MWS touches the tile."""
    strips = label_strips(tile, geoms, groups, tree)
    if strips is None:
        return False
    counts = np.zeros((acc.n, NCODES), dtype=np.int64)
    with rasterio_env(env), open_raster(gdal_path(tile.classes_href), tile.classes_href) as ds:

        def read(strip: LabelStrip) -> tuple[LabelStrip, np.ndarray]:
            (r0, r1), (c0, c1) = strip.window.toranges()
            return strip, read_window(ds, r0, r1, c0, c1)[..., 0]

        for strip, codes in read_ahead(partial(read, s) for s in strips):
            if tile.value:
                counts += _value_strip(strip, codes, acc)
                continue
            part, pixels = _count_strip(strip, codes, acc.n)
            counts += part
            acc.pixels += pixels
    acc.hectares += counts * tile.pixel_ha
    return True


@dataclass(frozen=True)
class ClassesResult:
    """The per-MWS class table of one year and what was read."""

    model: str
    year: int
    classes: tuple[ClassInfo, ...]
    table: gpd.GeoDataFrame
    tiles: tuple[ClassTile, ...]
    missing_cells: tuple[str, ...]


def aggregate_classes(
    frame: gpd.GeoDataFrame,
    tiles: Sequence[ClassTile],
    classes: Sequence[ClassInfo],
    model: str,
    year: int,
    on_tile: Callable[[ClassTile], None] | None = None,
    env: dict[str, str] | None = None,
) -> ClassesResult:
    """Hectares and percents of every class per MWS of ``frame`` (EPSG:4326, ``uid``).

    Raises:
        InputError: no class map of ``year`` under the layer.
    """
    geoms = np.asarray(frame.geometry.values, dtype=object)
    needed = {c.name for c in cells_covering(frame.total_bounds)}
    by_cell = {t.cell.name: t for t in tiles if t.year == year and t.cell.name in needed}
    if not by_cell:
        raise InputError(f"no class map of {model} for {year} under the MWS layer")
    groups = overlap_groups(geoms)
    tree = shapely.STRtree(geoms)
    acc = ClassCounts(len(geoms))
    read: list[ClassTile] = []
    for name in sorted(by_cell):
        if accumulate_class_tile(by_cell[name], geoms, groups, acc, tree, env):
            read.append(by_cell[name])
        if on_tile:
            on_tile(by_cell[name])
    missing = _missing_cells(geoms, set(by_cell))
    table = class_table(frame, acc, classes, missing)
    cells = tuple(sorted({c for m in missing for c in m}))
    return ClassesResult(model, year, tuple(classes), table, tuple(read), cells)


def class_table(
    frame: gpd.GeoDataFrame,
    acc: ClassCounts,
    classes: Sequence[ClassInfo],
    missing: list[set[str]],
) -> gpd.GeoDataFrame:
    """``uid``, per class ``{class}_in_ha`` and ``{class}_percent``, then the totals (a
    regression map: ``value_mean``, ``valued_in_ha``, then the totals)."""
    if list(classes) == [VALUE_CLASS]:
        return value_table(frame, acc, missing)
    values = [c.value for c in classes]
    hectares = acc.hectares[:, values]
    classified = hectares.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(classified[:, None] > 0, hectares / classified[:, None] * 100, np.nan)
    data: dict[str, Any] = {UID_COLUMN: frame[UID_COLUMN].to_numpy()}
    for i, c in enumerate(classes):
        data[f"{c.column}_in_ha"] = hectares[:, i]
        data[f"{c.column}_percent"] = percent[:, i]
    data["classified_in_ha"] = classified
    # class 0 and any code the head does not declare
    data["nodata_in_ha"] = np.maximum(acc.hectares.sum(axis=1) - classified, 0.0)
    data["pixels"] = acc.pixels
    data["flag"] = [
        FLAG_NO_VALID if not c > 0 else (FLAG_PARTIAL if m else FLAG_OK)
        for c, m in zip(classified, missing, strict=True)
    ]
    data["missing_cells"] = [",".join(sorted(m)) for m in missing]
    return gpd.GeoDataFrame(data, geometry=frame.geometry.to_numpy(), crs=frame.crs)


def value_table(
    frame: gpd.GeoDataFrame, acc: ClassCounts, missing: list[set[str]]
) -> gpd.GeoDataFrame:
    """The per-MWS table of a regression map: the mean value of its pixels with a value."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(acc.value_count > 0, acc.value_sum / np.maximum(acc.value_count, 1), np.nan)
    valued = acc.hectares[:, 1]
    data: dict[str, Any] = {
        UID_COLUMN: frame[UID_COLUMN].to_numpy(),
        "value_mean": mean,
        "valued_in_ha": valued,
        "nodata_in_ha": np.maximum(acc.hectares.sum(axis=1) - valued, 0.0),
        "pixels": acc.pixels,
        "flag": [
            FLAG_NO_VALID if not c > 0 else (FLAG_PARTIAL if m else FLAG_OK)
            for c, m in zip(acc.value_count, missing, strict=True)
        ],
        "missing_cells": [",".join(sorted(m)) for m in missing],
    }
    return gpd.GeoDataFrame(data, geometry=frame.geometry.to_numpy(), crs=frame.crs)


def class_columns(classes: Sequence[ClassInfo]) -> dict[str, str]:
    """``table:columns`` descriptions of a class table."""
    out = {
        UID_COLUMN: "Micro-watershed identifier (join key of the MWS layer)",
        "classified_in_ha": "Hectares of pixels with a class (the percents' denominator)",
        "nodata_in_ha": "Hectares of pixels without a class (water, invalid embeddings)",
        "pixels": "Pixels whose centre lies in the MWS, in the class maps read (each once)",
        "flag": "ok, partial_coverage (cells without a class map) or no_valid_pixels",
        "missing_cells": "Comma-separated 0.1° cells under the MWS without a class map",
        "geometry": "MWS outline, EPSG:4326",
        "value_mean": "Mean of the head's value over the MWS's pixels with a value",
        "valued_in_ha": "Hectares of pixels with a value (regression heads)",
        "value_change": "Change of value_mean, last - first year",
    }
    for c in classes:
        out[f"{c.column}_in_ha"] = f"Hectares classified as {c.name} (value {c.value})"
        out[f"{c.column}_percent"] = f"Share of the classified area that is {c.name}, in %"
        out[f"{c.column}_change_in_ha"] = f"Change of the hectares of {c.name}, last - first year"
    return out


# --------------------------------------------------------------------------- years
def change_table(results: Sequence[ClassesResult]) -> gpd.GeoDataFrame:
    """Per MWS and class: hectares in the first and last year and their difference."""
    first, last = results[0], results[-1]
    data: dict[str, Any] = {UID_COLUMN: first.table[UID_COLUMN].to_numpy()}
    if list(first.classes) == [VALUE_CLASS]:
        a, b = first.table["value_mean"].to_numpy(), last.table["value_mean"].to_numpy()
        data[f"value_mean_{first.year}"], data[f"value_mean_{last.year}"] = a, b
        data["value_change"] = b - a
        return gpd.GeoDataFrame(data, geometry=first.table.geometry.to_numpy(), crs=first.table.crs)
    for c in first.classes:
        a = first.table[f"{c.column}_in_ha"].to_numpy()
        b = last.table[f"{c.column}_in_ha"].to_numpy()
        data[f"{c.column}_{first.year}_in_ha"] = a
        data[f"{c.column}_{last.year}_in_ha"] = b
        data[f"{c.column}_change_in_ha"] = b - a
    return gpd.GeoDataFrame(data, geometry=first.table.geometry.to_numpy(), crs=first.table.crs)


def _json_number(value: Any) -> float | None:
    number = float(value)
    return round(number, 6) if math.isfinite(number) else None


def annual_rows(results: Sequence[ClassesResult]) -> list[dict[str, Any]]:
    """CoRE Stack's time-series shape: per ``uid``, ``annual: {time: [years], metric: [...]}``
    with ``annual_units``, plus the change per class over the whole period."""
    first, last = results[0], results[-1]
    regression = list(first.classes) == [VALUE_CLASS]
    metrics: list[tuple[str, str]] = []
    if regression:
        metrics = [("value_mean", "value"), ("valued_in_ha", "ha")]
    else:
        for c in first.classes:
            metrics += [(f"{c.column}_in_ha", "ha"), (f"{c.column}_percent", "%")]
        metrics.append(("classified_in_ha", "ha"))
    rows: list[dict[str, Any]] = []
    for i, uid in enumerate(first.table[UID_COLUMN]):
        annual: dict[str, Any] = {"time": [r.year for r in results]}
        for name, _ in metrics:
            annual[name] = [_json_number(r.table[name].iat[i]) for r in results]
        row: dict[str, Any] = {UID_COLUMN: str(uid), "annual": annual}
        row["annual_units"] = {name: unit for name, unit in metrics}
        if regression:
            a = float(first.table["value_mean"].iat[i])
            row["value_change"] = _json_number(float(last.table["value_mean"].iat[i]) - a)
            rows.append(row)
            continue
        for c in first.classes:
            a = float(first.table[f"{c.column}_in_ha"].iat[i])
            b = float(last.table[f"{c.column}_in_ha"].iat[i])
            row[f"{c.column}_change_in_ha"] = _json_number(b - a)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- items
def classes_item_id(mws_item_id: str, model: str, year: int, to: int | None = None) -> str:
    """``{mws}_classes_{model}_{year}`` (``..._{from}_{to}`` for the change)."""
    tail = f"{year}" if to is None else f"{year}_{to}"
    return f"{mws_item_id}_classes_{model}_{tail}"


def create_classes_collection(bbox: Sequence[float], interval: tuple[Any, Any]) -> Any:
    """The derived collection of per-MWS class areas (pure)."""
    return derived_table_collection(
        MWS_CLASSES_COLLECTION_ID,
        "Land cover per CoRE Stack micro-watershed, from TESSERA heads",
        "Per-MWS hectares and percents of each class of a head applied to the TESSERA "
        "embeddings (`{class}_in_ha`, `{class}_percent`): pixels whose centre lies in the "
        "micro-watershed, each counted once (in the tile whose 0.1° cell holds its centre). "
        "One item per (block, model, year), and per (block, model, first and last year) the "
        "change in hectares with the yearly series in CoRE Stack's `annual` shape.",
        ["TESSERA", "land cover", "CoRE Stack", "micro-watershed", "classification"],
        bbox,
        interval,
    )


def create_classes_item(
    item_id: str,
    table: gpd.GeoDataFrame,
    years: tuple[int, int],
    model: str,
    classes: Sequence[ClassInfo],
    mws_item: dict[str, Any],
    links: dict[str, list[str | None]],
    assets: dict[str, Any],
    processed: datetime,
    unlinked: Sequence[str] = (),
) -> Any:
    """The STAC item of a per-MWS class table (one year, or a change over ``years``; pure)."""
    import pystac

    from tessera_stac.publisher.watersheds.layer import footprint, table_columns

    start = datetime(years[0], 1, 1, tzinfo=UTC)
    end = datetime(years[1], 12, 31, 23, 59, 59, tzinfo=UTC)
    item = pystac.Item(
        id=item_id,
        geometry=shapely.geometry.mapping(footprint(table)),
        bbox=[round(float(v), 8) for v in table.total_bounds],
        datetime=start,
        start_datetime=start,
        end_datetime=end,
        properties={},
        collection=MWS_CLASSES_COLLECTION_ID,
        stac_extensions=[TABLE_SCHEMA_URI, FILE_SCHEMA_URI],
    )
    props = item.properties
    change = years[0] != years[1]
    span = f"{years[0]}-{years[1]}" if change else str(years[0])
    props["title"] = f"Land cover ({model}) per MWS, {span}: {mws_item['id']}"
    props["description"] = (
        f"{len(table)} micro-watersheds; "
        + ("change in hectares per class" if change else "hectares and percents per class")
        + f" of the head {model!r}. Pixel-centre rule; each pixel counted once."
    )
    for key in ("corestack:state", "corestack:district", "corestack:block"):
        if key in mws_item.get("properties", {}):
            props[key] = mws_item["properties"][key]
    props["corestack:layer"] = "mws_classes_change" if change else "mws_classes"
    props["tessera:model"] = model
    regression = list(classes) == [VALUE_CLASS]
    props["tessera:task"] = "regression" if regression else "classification"
    props["tessera:year"] = years[1]
    if change:
        props["tessera:years"] = list(years)
    props["tessera:classes"] = [
        {"value": c.value, "name": c.name, "color": c.color, "column": c.column}
        for c in classes
        if not regression
    ]
    props["processing:datetime"] = pystac.utils.datetime_to_str(processed)
    props["table:primary_geometry"] = "geometry"
    props["table:row_count"] = len(table)
    props["table:columns"] = table_columns(table, class_columns(classes))
    add_file_assets(item, assets)
    for rel, hrefs in links.items():
        for href in filter(None, hrefs):
            item.add_link(pystac.Link(rel, href, "application/geo+json"))
    if unlinked:  # items outside the catalog: their ids, never their local paths
        props["tessera:source_items"] = list(unlinked)
    return item


@dataclass(frozen=True)
class ClassesOutput:
    """Where :func:`write_classes` put one item."""

    item_id: str
    item_path: Path
    parquet: Path
    csv: Path
    annual: Path | None


def write_classes(
    results: Sequence[ClassesResult],
    root: Path,
    mws_item: dict[str, Any],
    mws_href: str,
    processed: datetime,
) -> list[ClassesOutput]:
    """Publish one item per year (GeoParquet + CSV) and, over several years, the change item
    (change GeoParquet + CSV + the ``annual`` JSON), in ``corestack-mws-classes``."""
    from tessera_stac.publisher.watersheds.layer import asset_record

    outputs: list[ClassesOutput] = []
    mws_id = str(mws_item["id"])

    def publish(
        item_id: str,
        table: gpd.GeoDataFrame,
        years: tuple[int, int],
        tiles: Sequence[ClassTile],
        derived: Sequence[str],
        annual: list[dict[str, Any]] | None,
    ) -> ClassesOutput:
        model, classes = results[0].model, results[0].classes

        def fill(staged: Path, final: Path) -> dict[str, Any]:
            parquet = staged / f"{item_id}.parquet"
            table.to_parquet(parquet, index=False, compression="zstd", schema_version="1.1.0")
            csv = staged / f"{item_id}.csv"
            table.drop(columns="geometry").to_csv(csv, index=False, float_format="%.10g")
            records = {
                "data": asset_record(parquet, "data", PARQUET_MEDIA_TYPE, ("data",)),
                "csv": asset_record(csv, "csv", CSV_MEDIA_TYPE, ("data",)),
            }
            if annual is not None:
                path = staged / f"{item_id}_annual.json"
                path.write_text(json.dumps(annual, separators=(",", ":")))
                records["annual"] = asset_record(path, "annual", JSON_MEDIA_TYPE, ("data",))
            tile_links = [_rel(t.item_href, final, root) for t in tiles]
            links = {
                "derived_from": [
                    _rel(mws_href, final, root),
                    *tile_links,
                    *(
                        _rel(str(root / MWS_CLASSES_COLLECTION_ID / d / f"{d}.json"), final, root)
                        for d in derived
                    ),
                ]
            }
            unlinked = [t.item_id for t, h in zip(tiles, tile_links, strict=True) if not h]
            if links["derived_from"][0] is None:
                unlinked.insert(0, mws_id)
            item = create_classes_item(
                item_id, table, years, model, classes, mws_item, links, records, processed,
                unlinked,
            )  # fmt: skip
            return dict(item.to_dict(include_self_link=False, transform_hrefs=False))

        write_derived_item(
            root, MWS_CLASSES_COLLECTION_ID, item_id, fill, create_classes_collection
        )
        final = root / MWS_CLASSES_COLLECTION_ID / item_id
        return ClassesOutput(
            item_id,
            final / f"{item_id}.json",
            final / f"{item_id}.parquet",
            final / f"{item_id}.csv",
            final / f"{item_id}_annual.json" if annual is not None else None,
        )

    year_ids: list[str] = []
    for r in results:
        item_id = classes_item_id(mws_id, r.model, r.year)
        outputs.append(publish(item_id, r.table, (r.year, r.year), r.tiles, (), None))
        year_ids.append(item_id)
    if len(results) > 1:
        first, last = results[0], results[-1]
        item_id = classes_item_id(mws_id, first.model, first.year, last.year)
        outputs.append(
            publish(
                item_id,
                change_table(results),
                (first.year, last.year),
                (),
                year_ids,
                annual_rows(results),
            )
        )
    return outputs


def classes_per_watershed(
    root: Path,
    model: str,
    years: Sequence[int],
    mws_item: dict[str, Any],
    frame: gpd.GeoDataFrame,
    tiles_root: Path | None = None,
    on_tile: Callable[[ClassTile], None] | None = None,
) -> list[ClassesResult]:
    """Aggregate the class maps of ``model`` for each of ``years`` (found under ``tiles_root``,
    default ``root``) over the MWS of ``frame``.

    Raises:
        InputError: a bad model name, too many years, or a year without class maps.
    """
    check_model_name(model)
    if not years or len(years) > MAX_YEARS:
        raise InputError(f"give 1 to {MAX_YEARS} years, not {len(years)}")
    by_year, classes = find_class_tiles_local(
        tiles_root or root, model, years, tuple(float(v) for v in frame.total_bounds)
    )
    empty = [y for y, t in by_year.items() if not t]
    if empty:
        raise InputError(
            f"no class map of {model} for {', '.join(map(str, empty))} under the MWS layer "
            f"of {mws_item['id']} (run `tessera-stac classify map {model} --year {empty[0]}`)"
        )
    return [
        aggregate_classes(frame, by_year[y], classes, model, y, on_tile) for y in sorted(by_year)
    ]

"""The watershed feature tables beside pgSTAC: what tipg serves as OGC API Features and tiles.

``tessera-stac load`` calls :func:`load_feature_tables` inside its own transaction with the
watershed items it has just handed to pgSTAC, so the tables and the STAC items change together
or not at all. Every item replaces its own rows (``DELETE ... WHERE item = id`` then the new
rows), so loading the same catalog twice leaves the tables as they were.

Tables, schema :data:`~tessera_stac.catalog.constants.FEATURES_SCHEMA`, geometries in
EPSG:4326 exactly as published (the GeoParquet's WKB), one row per micro-watershed:

* ``mws``: every published MWS layer (``corestack-mws`` items, or any item with
  ``corestack:layer = mws`` and a GeoParquet ``data`` asset): ``uid``, state, district, block,
  ``area_in_ha`` when the layer has it, the source item;
* ``mws_embeddings``: the join (``corestack-mws-embeddings``) per ``uid`` and ``year``: pixel
  counts, valid fraction, flag and the PCA colour of the join's map (``#rrggbb`` and its r, g, b
  in 0-255, the same function as the map: ``catalog.pca``);
* ``mws_change``: per ``uid`` and year pair (``corestack-mws-change``): cosine distance of the
  mean vectors, share of changed pixels, pixel counts;
* ``mws_vectors`` (no geometry, so never served as features): the 128-d mean vector per
  ``uid`` and ``year``, keyed by the ``mws_embeddings`` row id (what ``uid=`` similarity reads).

Feature ids (``id``) are ``{item}:{uid}``: a uid is unique within a block's layer only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera_stac.catalog.constants import (
    BAND_NAMES,
    CHANGE_COLLECTION_ID,
    FEATURES_SCHEMA,
    JOIN_COLLECTION_ID,
    MWS_CHANGE_TABLE,
    MWS_CLASSES_COLLECTION_ID,
    MWS_CLASSES_TABLE,
    MWS_COLLECTION_ID,
    MWS_EMBEDDINGS_TABLE,
    MWS_TABLE,
    MWS_VECTORS_TABLE,
    UID_COLUMN,
)
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.hrefs import is_url

#: the GeoParquet asset of every watershed table item
DATA_ASSET = "data"
MWS_LAYER = "mws"
S = FEATURES_SCHEMA

DDL = (
    f"""
CREATE SCHEMA IF NOT EXISTS {S};
CREATE TABLE IF NOT EXISTS {S}.{MWS_TABLE} (
    id text PRIMARY KEY,
    uid text NOT NULL,
    item text NOT NULL,
    collection text NOT NULL,
    state text,
    district text,
    block text,
    area_in_ha double precision,
    geom geometry(Geometry, 4326) NOT NULL
);
CREATE TABLE IF NOT EXISTS {S}.{MWS_EMBEDDINGS_TABLE} (
    id text PRIMARY KEY,
    uid text NOT NULL,
    item text NOT NULL,
    year integer NOT NULL,
    state text,
    district text,
    block text,
    count bigint,
    pixels bigint,
    valid_fraction double precision,
    flag text,
    pca_colour text,
    pca_r smallint,
    pca_g smallint,
    pca_b smallint,
    geom geometry(Geometry, 4326) NOT NULL
);
CREATE TABLE IF NOT EXISTS {S}.{MWS_CHANGE_TABLE} (
    id text PRIMARY KEY,
    uid text NOT NULL,
    item text NOT NULL,
    year_from integer NOT NULL,
    year_to integer NOT NULL,
    state text,
    district text,
    block text,
    distance double precision,
    changed_share double precision,
    pixels bigint,
    changed_pixels bigint,
    geom geometry(Geometry, 4326) NOT NULL
);
CREATE TABLE IF NOT EXISTS {S}.{MWS_CLASSES_TABLE} (
    id text PRIMARY KEY,
    uid text NOT NULL,
    item text NOT NULL,
    model text NOT NULL,
    year integer NOT NULL,
    state text,
    district text,
    block text,
    class text NOT NULL,
    class_value integer,
    class_colour text,
    in_ha double precision,
    percent double precision,
    geom geometry(Geometry, 4326) NOT NULL
);
CREATE TABLE IF NOT EXISTS {S}.{MWS_VECTORS_TABLE} (
    id text PRIMARY KEY,
    uid text NOT NULL,
    item text NOT NULL,
    year integer NOT NULL,
    mean real[]
);
"""
    + "".join(
        f"CREATE INDEX IF NOT EXISTS {t}_geom_idx ON {S}.{t} USING gist (geom);\n"
        f"CREATE INDEX IF NOT EXISTS {t}_item_idx ON {S}.{t} (item);\n"
        f"CREATE INDEX IF NOT EXISTS {t}_uid_idx ON {S}.{t} (uid);\n"
        for t in (MWS_TABLE, MWS_EMBEDDINGS_TABLE, MWS_CHANGE_TABLE, MWS_CLASSES_TABLE)
    )
    + (
        f"CREATE INDEX IF NOT EXISTS {MWS_VECTORS_TABLE}_uid_idx ON {S}.{MWS_VECTORS_TABLE} "
        "(uid, year);\n"
        f"CREATE INDEX IF NOT EXISTS {MWS_VECTORS_TABLE}_item_idx ON {S}.{MWS_VECTORS_TABLE} "
        "(item);\n"
    )
)


@dataclass(frozen=True)
class WatershedItem:
    """A loaded item whose table becomes feature rows: which table, and where its data is."""

    table: str
    item: dict[str, Any]
    data_href: str  # local path or URL the loader can read (never the public /data URL)


@dataclass
class FeatureReport:
    """Rows written per table."""

    rows: dict[str, int] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)


def feature_table_of(item: dict[str, Any]) -> str | None:
    """The feature table an item feeds, or None (by collection, or ``corestack:layer = mws``
    for MWS layers imported from CoRE Stack's own catalogs)."""
    assets = item.get("assets") or {}
    data = assets.get(DATA_ASSET)
    if not isinstance(data, dict) or "parquet" not in str(data.get("type", "")):
        return None
    collection = item.get("collection")
    if collection == JOIN_COLLECTION_ID:
        return MWS_EMBEDDINGS_TABLE
    if collection == CHANGE_COLLECTION_ID:
        return MWS_CHANGE_TABLE
    props = item.get("properties") or {}
    if collection == MWS_CLASSES_COLLECTION_ID:
        one_year = props.get("corestack:layer") == "mws_classes"
        classified = props.get("tessera:task") == "classification" and props.get("tessera:classes")
        return MWS_CLASSES_TABLE if one_year and classified else None
    if collection == MWS_COLLECTION_ID or props.get("corestack:layer") == MWS_LAYER:
        return MWS_TABLE
    return None


def _read_bytes(href: str) -> bytes:
    import httpx

    from tessera_stac.catalog.store import is_s3, open_store, split_s3

    try:
        if is_s3(href):  # a catalog published to S3: the one store (StorageSettings)
            bucket, key = split_s3(href)
            return open_store(f"s3://{bucket}").read_bytes(key)
        if is_url(href):
            response = httpx.get(href, timeout=60, follow_redirects=True)
            response.raise_for_status()
            return response.content
        return Path(href.removeprefix("file://")).read_bytes()
    except Exception as exc:  # OSError, httpx or botocore errors: name the file
        raise InputError(f"{href}: cannot read the watershed table: {exc}") from exc


def read_table(href: str, columns: Sequence[str]) -> Any:
    """The named columns (those present) of a GeoParquet table, as a pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(_read_bytes(href)))
        present = [c for c in columns if c in parquet.schema_arrow.names]
        return parquet.read(columns=present)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{href}: not a GeoParquet table: {exc}") from exc


def _column(table: Any, name: str, href: str) -> list[Any]:
    if name not in table.column_names:
        raise InputError(f"{href}: the watershed table has no {name!r} column")
    return list(table[name].to_pylist())


def _optional(table: Any, name: str) -> list[Any]:
    return list(table[name].to_pylist()) if name in table.column_names else [None] * len(table)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _place(item: dict[str, Any]) -> tuple[Any, Any, Any]:
    props = item.get("properties") or {}
    return (
        props.get("corestack:state"),
        props.get("corestack:district"),
        props.get("corestack:block"),
    )


def _year(props: dict[str, Any], key: str) -> int:
    value = props.get(key) or str(props.get("start_datetime") or props.get("datetime") or "")[:4]
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"item properties carry no year ({key})") from exc


def _mws_rows(w: WatershedItem) -> list[tuple[Any, ...]]:
    table = read_table(w.data_href, [UID_COLUMN, "area_in_ha", "geometry"])
    uids = _column(table, UID_COLUMN, w.data_href)
    geoms = _column(table, "geometry", w.data_href)
    areas = _optional(table, "area_in_ha")
    item_id = str(w.item["id"])
    state, district, block = _place(w.item)
    collection = str(w.item.get("collection"))
    return [
        (f"{item_id}:{uid}", str(uid), item_id, collection, state, district, block,
         _finite(area), geom)
        for uid, area, geom in zip(uids, areas, geoms, strict=True)
    ]  # fmt: skip


def _join_rows(w: WatershedItem) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    from tessera_stac.catalog.pca import hex_colours, pca_colours

    cols = [UID_COLUMN, "count", "pixels", "valid_fraction", "flag", *BAND_NAMES, "geometry"]
    table = read_table(w.data_href, cols)
    uids = _column(table, UID_COLUMN, w.data_href)
    geoms = _column(table, "geometry", w.data_href)
    means = np.column_stack(
        [np.asarray(_column(table, n, w.data_href), dtype=np.float64) for n in BAND_NAMES]
    ).astype(np.float32)
    rgb = pca_colours(means)
    colours = hex_colours(rgb)
    item_id = str(w.item["id"])
    year = _year(w.item.get("properties") or {}, "tessera:year")
    state, district, block = _place(w.item)
    counts, pixels = _optional(table, "count"), _optional(table, "pixels")
    fractions, flags = _optional(table, "valid_fraction"), _optional(table, "flag")
    rows, vectors = [], []
    for i, uid in enumerate(uids):
        fid = f"{item_id}:{uid}"
        channels = (
            [round(float(v) * 255) for v in rgb[i]]
            if colours[i] is not None
            else [None, None, None]
        )
        rows.append(
            (fid, str(uid), item_id, year, state, district, block, counts[i], pixels[i],
             _finite(fractions[i]), flags[i], colours[i], *channels, geoms[i])
        )  # fmt: skip
        vector = means[i]
        vectors.append(
            (fid, str(uid), item_id, year,
             [float(v) for v in vector] if np.isfinite(vector).all() else None)
        )  # fmt: skip
    return rows, vectors


def _change_rows(w: WatershedItem) -> list[tuple[Any, ...]]:
    cols = [UID_COLUMN, "distance", "changed_share", "pixels", "changed_pixels", "geometry"]
    table = read_table(w.data_href, cols)
    uids = _column(table, UID_COLUMN, w.data_href)
    geoms = _column(table, "geometry", w.data_href)
    props = w.item.get("properties") or {}
    year_from, year_to = _year(props, "tessera:year_from"), _year(props, "tessera:year_to")
    item_id = str(w.item["id"])
    state, district, block = _place(w.item)
    distance, share = _optional(table, "distance"), _optional(table, "changed_share")
    pixels, changed = _optional(table, "pixels"), _optional(table, "changed_pixels")
    return [
        (f"{item_id}:{uid}", str(uid), item_id, year_from, year_to, state, district, block,
         _finite(distance[i]), _finite(share[i]), pixels[i], changed[i], geoms[i])
        for i, uid in enumerate(uids)
    ]  # fmt: skip


def _classes_rows(w: WatershedItem) -> list[tuple[Any, ...]]:
    """One row per (uid, class) of a one-year class table: hectares and percent (long form,
    so a filter reads ``class = 'Cropland' AND percent > 50``)."""
    props = w.item.get("properties") or {}
    classes = [c for c in props.get("tessera:classes") or [] if isinstance(c, dict)]
    columns = [f"{c['column']}_{suffix}" for c in classes for suffix in ("in_ha", "percent")]
    table = read_table(w.data_href, [UID_COLUMN, *columns, "geometry"])
    uids = _column(table, UID_COLUMN, w.data_href)
    geoms = _column(table, "geometry", w.data_href)
    item_id, model = str(w.item["id"]), str(props.get("tessera:model"))
    year = _year(props, "tessera:year")
    state, district, block = _place(w.item)
    rows = []
    for c in classes:
        hectares = _column(table, f"{c['column']}_in_ha", w.data_href)
        percents = _column(table, f"{c['column']}_percent", w.data_href)
        rows += [
            (f"{item_id}:{uid}:{c['value']}", str(uid), item_id, model, year, state, district,
             block, str(c["name"]), int(c["value"]), c.get("color"), _finite(hectares[i]),
             _finite(percents[i]), geoms[i])
            for i, uid in enumerate(uids)
        ]  # fmt: skip
    return rows


_GEOM = "ST_SetSRID(ST_GeomFromWKB(%s), 4326)"
INSERTS = {
    MWS_TABLE: f"INSERT INTO {S}.{MWS_TABLE} (id, uid, item, collection, state, district, "
    f"block, area_in_ha, geom) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {_GEOM})",
    MWS_EMBEDDINGS_TABLE: f"INSERT INTO {S}.{MWS_EMBEDDINGS_TABLE} (id, uid, item, year, "
    "state, district, block, count, pixels, valid_fraction, flag, pca_colour, pca_r, pca_g, "
    f"pca_b, geom) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_GEOM})",
    MWS_CHANGE_TABLE: f"INSERT INTO {S}.{MWS_CHANGE_TABLE} (id, uid, item, year_from, year_to, "
    "state, district, block, distance, changed_share, pixels, changed_pixels, geom) VALUES "
    f"(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_GEOM})",
    MWS_CLASSES_TABLE: f"INSERT INTO {S}.{MWS_CLASSES_TABLE} (id, uid, item, model, year, "
    "state, district, block, class, class_value, class_colour, in_ha, percent, geom) VALUES "
    f"(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_GEOM})",
    MWS_VECTORS_TABLE: f"INSERT INTO {S}.{MWS_VECTORS_TABLE} (id, uid, item, year, mean) "
    "VALUES (%s, %s, %s, %s, %s::real[])",
}


def ensure_schema(conn: Any) -> None:
    """Create the schema, tables and indexes when missing (idempotent)."""
    conn.execute(DDL)


def _replace(conn: Any, table: str, item_id: str, rows: list[tuple[Any, ...]]) -> int:
    conn.execute(f"DELETE FROM {S}.{table} WHERE item = %s", (item_id,))
    if rows:
        with conn.cursor() as cur:
            cur.executemany(INSERTS[table], rows)
    return len(rows)


def load_feature_tables(conn: Any, items: Iterable[WatershedItem]) -> FeatureReport:
    """Replace the feature rows of each item (inside the caller's transaction).

    Raises:
        InputError: an item's table cannot be read or lacks a column (names the file).
    """
    report = FeatureReport()
    todo = list(items)
    if not todo:
        return report
    ensure_schema(conn)
    for w in todo:
        item_id = str(w.item["id"])
        if w.table == MWS_TABLE:
            written = {MWS_TABLE: _replace(conn, MWS_TABLE, item_id, _mws_rows(w))}
        elif w.table == MWS_EMBEDDINGS_TABLE:
            rows, vectors = _join_rows(w)
            written = {
                MWS_EMBEDDINGS_TABLE: _replace(conn, MWS_EMBEDDINGS_TABLE, item_id, rows),
                MWS_VECTORS_TABLE: _replace(conn, MWS_VECTORS_TABLE, item_id, vectors),
            }
        elif w.table == MWS_CLASSES_TABLE:
            rows = _classes_rows(w)
            written = {MWS_CLASSES_TABLE: _replace(conn, MWS_CLASSES_TABLE, item_id, rows)}
        else:
            written = {MWS_CHANGE_TABLE: _replace(conn, MWS_CHANGE_TABLE, item_id, _change_rows(w))}
        for table, count in written.items():
            report.rows[table] = report.rows.get(table, 0) + count
        report.items.append(item_id)
    return report

"""CoRE Stack micro-watershed (MWS) layers: read, check, and publish as GeoParquet + STAC.

Parse -> build -> write, as in stactools packages:

* :func:`read_mws_layer` reads a layer in any of the formats CoRE Stack hands out (GeoServer WFS
  GeoJSON with its legacy ``crs`` member, GeoPackage, shapefile, GeoParquet), checks it (uid
  present and unique, polygonal non-empty geometries, a known CRS) and returns an
  :class:`MwsLayer` in EPSG:4326, repairing what can be repaired and listing it in ``warnings``.
* :func:`create_mws_item` / :func:`create_mws_collection` are pure STAC builders.
* :func:`publish_mws_layer` writes ``{root}/corestack-mws/{item_id}/`` (GeoParquet, GeoJSON,
  item JSON) beside the embedding collection, updates the collection and root catalog, and
  optionally publishes the same keys to S3, all through the one store (``catalog.store``) and
  static-catalog writer (``catalog.static``). Nothing is half-written: folders are staged
  whole and swapped in.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import shapely
from shapely.geometry.base import BaseGeometry

from tessera_stac.catalog.constants import (
    FILE_SCHEMA_URI,
    GEOJSON_MEDIA_TYPE,
    MWS_COLLECTION_ID,
    PARQUET_MEDIA_TYPE,
    TABLE_SCHEMA_URI,
    UID_COLUMN,
)
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.lru import LruCache
from tessera_stac.catalog.model import AssetRecord
from tessera_stac.catalog.stac import CATALOG_KEY
from tessera_stac.catalog.static import (
    dump_json,
    item_links,
    put_collection,
    read_items,
    temporal_extent,
)
from tessera_stac.catalog.store import Store, is_s3, multihash, open_store, sha256_file

MWS_LAYER_NAME = "mws"
CORESTACK_LICENSE = "CC-BY-4.0"
FIRST_TESSERA_YEAR = 2017  # the first year TESSERA embeddings exist for
GEOMETRY_ALIASES = ("geometry", "geom", "the_geom", "wkb_geometry", "shape")
VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".parquet", ".geoparquet", ".zip"}

# Short descriptions of the columns CoRE Stack MWS layers carry (others get none).
KNOWN_COLUMNS = {
    "uid": "Micro-watershed identifier (string join key, unique within the layer)",
    "id": "CoRE Stack numeric feature id",
    "area_in_ha": "Area of the micro-watershed in hectares",
    "geometry": "Micro-watershed outline, EPSG:4326 (WKB, GeoParquet primary geometry)",
}

_NAME_DROP = re.compile(r"[^a-z0-9 .,:;_-]")


def normalise_name(name: str) -> str:
    """Normalise a state/district/block name the way CoRE Stack builds its asset paths.

    CoRE Stack lowercases the name, drops every character outside ``[a-z0-9 .,:;_-]`` and turns
    spaces into underscores (its ``valid_gee_text(name.lower())``); surrounding whitespace is
    stripped first. ``"Uttar Pradesh"`` -> ``"uttar_pradesh"``.

    Raises:
        InputError: when nothing is left of the name.
    """
    cleaned = _NAME_DROP.sub("", name.strip().lower()).replace(" ", "_")
    if not cleaned.strip("_"):
        raise InputError(f"name {name!r} is empty once normalised as CoRE Stack does")
    return cleaned


@dataclass(frozen=True)
class BlockName:
    """A CoRE Stack administrative block: names as given and as normalised."""

    state: str
    district: str
    block: str

    @property
    def keys(self) -> tuple[str, str, str]:
        """(state, district, block) normalised as CoRE Stack does."""
        return normalise_name(self.state), normalise_name(self.district), normalise_name(self.block)

    def layer_id(self, layer: str) -> str:
        """CoRE Stack style id ``{state}_{district}_{block}_{layer}``."""
        return "_".join([*self.keys, layer])

    @property
    def mws_item_id(self) -> str:
        """Item id of the block's MWS layer, e.g. ``gujarat_bhavnagar_bhavnagar_mws``."""
        return self.layer_id(MWS_LAYER_NAME)


@dataclass(frozen=True)
class MwsLayer:
    """A checked MWS layer in EPSG:4326, keyed by a unique string ``uid``.

    Attributes:
        source: where it was read from.
        frame: one row per MWS; geometry column ``geometry`` (MultiPolygon, EPSG:4326).
        source_crs: the CRS of the file as read (``EPSG:4326`` when no reprojection happened).
        warnings: what was repaired or assumed, one readable line each.
    """

    source: str
    frame: gpd.GeoDataFrame
    source_crs: str
    warnings: tuple[str, ...] = ()

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of all MWS."""
        west, south, east, north = (float(v) for v in self.frame.total_bounds)
        return west, south, east, north


# ------------------------------------------------------------------------------- reading
def _read_frame(path: Path) -> gpd.GeoDataFrame:
    """Read any supported vector format into a GeoDataFrame (no checks yet)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        try:
            return gpd.read_parquet(path)
        except ValueError:
            return _read_plain_parquet(path)
    return gpd.read_file(path, engine="pyogrio")


def _read_plain_parquet(path: Path) -> gpd.GeoDataFrame:
    """A Parquet file without GeoParquet metadata: find a WKB geometry column by name."""
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pandas()
    for name in GEOMETRY_ALIASES:
        if name in table.columns:
            geoms = shapely.from_wkb(table.pop(name).to_numpy())
            return gpd.GeoDataFrame(table, geometry=geoms, crs=None)
    raise InputError(
        f"{path}: Parquet file without GeoParquet metadata and no WKB geometry column "
        f"(looked for {', '.join(GEOMETRY_ALIASES)})"
    )


def _normalise_uids(frame: gpd.GeoDataFrame, src: str, uid_column: str) -> gpd.GeoDataFrame:
    if uid_column not in frame.columns:
        cols = ", ".join(str(c) for c in frame.columns if c != frame.geometry.name)
        raise InputError(f"{src}: no {uid_column!r} column (columns: {cols})")
    raw = frame[uid_column]
    uids: list[str | None] = []
    for value in raw.tolist():
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            uids.append(None)
        elif isinstance(value, float) and value.is_integer():
            uids.append(str(int(value)))
        else:
            text = str(value).strip()
            uids.append(text or None)
    missing = [i for i, u in enumerate(uids) if u is None]
    if missing:
        raise InputError(
            f"{src}: {len(missing)} feature(s) without a {uid_column!r} value "
            f"(feature index {_preview(missing)})"
        )
    frame = frame.copy()
    frame[uid_column] = uids
    dup = frame[uid_column][frame[uid_column].duplicated(keep=False)]
    if len(dup):
        raise InputError(f"{src}: duplicate {uid_column!r} values: {_preview(sorted(set(dup)))}")
    return frame


def _preview(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" ... ({len(values)} in all)" if len(values) > limit else "")


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of a geometry as a MultiPolygon (empty when there is none)."""
    if isinstance(geom, shapely.MultiPolygon):
        return geom
    if isinstance(geom, shapely.Polygon):
        return shapely.MultiPolygon([geom])
    parts = shapely.get_parts(geom)
    polys: list[shapely.Polygon] = []
    for part in parts:
        if isinstance(part, shapely.Polygon):
            polys.append(part)
        elif isinstance(part, shapely.MultiPolygon | shapely.GeometryCollection):
            polys.extend(shapely.get_parts(_polygonal(part)))
    return shapely.MultiPolygon(polys)


def _check_geometries(
    frame: gpd.GeoDataFrame, src: str, uid_column: str, drop_empty: bool
) -> tuple[gpd.GeoDataFrame, list[str]]:
    warnings: list[str] = []
    geoms = np.asarray(frame.geometry.values, dtype=object)
    empty = np.array([g is None or g.is_empty for g in geoms])
    if empty.any():
        bad = frame[uid_column][empty].tolist()
        if not drop_empty:
            raise InputError(
                f"{src}: {len(bad)} MWS with an empty or missing geometry "
                f"(uid {_preview(bad)}); fix the layer or pass --drop-empty"
            )
        warnings.append(f"dropped {len(bad)} MWS with an empty geometry: uid {_preview(bad)}")
        frame = frame[~empty].copy()
        geoms = geoms[~empty]
    geoms = shapely.force_2d(geoms)
    kinds = shapely.get_type_id(geoms)
    not_poly = [
        u
        for u, g, k in zip(frame[uid_column], geoms, kinds, strict=True)
        if k not in (3, 6) and _polygonal(g).is_empty
    ]
    if not_poly:
        raise InputError(
            f"{src}: MWS must be polygons; uid {_preview(not_poly)} are "
            f"{sorted({g.geom_type for g in geoms if _polygonal(g).is_empty})}"
        )
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        bad = frame[uid_column][invalid].tolist()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
        warnings.append(f"repaired {len(bad)} invalid geometries (make_valid): uid {_preview(bad)}")
    geoms = np.array([_polygonal(g) for g in geoms], dtype=object)
    collapsed = [u for u, g in zip(frame[uid_column], geoms, strict=True) if g.is_empty]
    if collapsed:
        raise InputError(f"{src}: geometry of uid {_preview(collapsed)} is empty once repaired")
    frame = frame.set_geometry(gpd.GeoSeries(geoms, index=frame.index, crs=frame.crs))
    return frame, warnings


def _to_wgs84(frame: gpd.GeoDataFrame, src: str) -> tuple[gpd.GeoDataFrame, str, list[str]]:
    warnings: list[str] = []
    if frame.crs is None:
        west, south, east, north = frame.total_bounds
        if -180 <= west <= east <= 180 and -90 <= south <= north <= 90:
            warnings.append(
                "the layer declares no CRS; its coordinates look like lon/lat: EPSG:4326"
            )
            return frame.set_crs(4326), "unknown (assumed EPSG:4326)", warnings
        raise InputError(f"{src}: the layer declares no CRS and is not in lon/lat degrees")
    source_crs = frame.crs.to_string()
    if frame.crs.to_epsg() != 4326:
        warnings.append(f"reprojected from {source_crs} to EPSG:4326")
        frame = frame.to_crs(4326)
    west, south, east, north = frame.total_bounds
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise InputError(f"{src}: coordinates out of lon/lat range once in EPSG:4326")
    return frame, source_crs, warnings


def read_mws_layer(
    path: str | Path, *, uid_column: str = UID_COLUMN, drop_empty: bool = False
) -> MwsLayer:
    """Read and check an MWS layer; return it in EPSG:4326 keyed by a string ``uid``.

    Args:
        path: GeoJSON (also GeoServer WFS output with a legacy ``crs`` member), GeoPackage,
            shapefile, or (Geo)Parquet with a ``geometry``/``geom``/``the_geom`` column.
        uid_column: the join key column.
        drop_empty: drop MWS with an empty geometry (with a warning) instead of failing.

    Raises:
        InputError: naming the file and the problem (empty file, no features, missing or
            duplicate uid, non-polygon or empty geometries, unknown CRS).
    """
    src = Path(path)
    if not src.exists():
        raise InputError(f"{src}: no such file")
    if src.is_file() and src.stat().st_size == 0:
        raise InputError(f"{src}: the file is empty")
    if src.suffix.lower() not in VECTOR_SUFFIXES:
        raise InputError(f"{src}: unsupported format (use GeoJSON, GeoPackage, shapefile, Parquet)")
    try:
        frame = _read_frame(src)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{src}: cannot read as a vector layer: {exc}") from exc
    if len(frame) == 0:
        raise InputError(f"{src}: the layer has no features")
    if frame.geometry.name != "geometry":
        frame = frame.rename_geometry("geometry")
    frame = _normalise_uids(frame, str(src), uid_column)
    frame, warnings = _check_geometries(frame, str(src), uid_column, drop_empty)
    frame, source_crs, crs_warnings = _to_wgs84(frame, str(src))
    frame = frame.reset_index(drop=True)
    cols = [uid_column, *[c for c in frame.columns if c not in (uid_column, "geometry")]]
    frame = frame[[*cols, "geometry"]]
    return MwsLayer(str(src), frame, source_crs, tuple(crs_warnings + warnings))


# ------------------------------------------------------------------------- STAC builders
#: Footprints computed last, by (digest of the geometries' WKB, margin): a block's layer, its
#: joins of every year, change and class tables share their geometries, and the buffer of the
#: union is the slow part (~1.5-3 s for the 116 MWS of a block).
_FOOTPRINTS = LruCache(8)


def footprint(frame: gpd.GeoDataFrame, margin: float = 0.002) -> BaseGeometry:
    """Outline covering every MWS: grown by ``margin`` degrees, simplified, holes dropped.

    The union of MWS traced from a 30 m DEM is a ~100 kB staircase; the footprint keeps the
    item small and still contains every polygon (the simplification tolerance is half the
    margin), so a spatial search never misses the layer. The outline of the same geometries
    (in the same order) is computed once per process (a small LRU, :data:`_FOOTPRINTS`).
    """
    geoms = np.asarray(frame.geometry.values)
    digest = hashlib.blake2b(digest_size=20)
    for wkb in shapely.to_wkb(geoms):
        digest.update(len(wkb).to_bytes(8, "little") if wkb is not None else b"none")
        digest.update(wkb or b"")
    key = (digest.digest(), float(margin))
    outline: BaseGeometry | None = _FOOTPRINTS.get(key)
    if outline is None:
        outline = _footprint(geoms, margin)
        _FOOTPRINTS.put(key, outline)
    return outline


def _footprint(geoms: Any, margin: float) -> BaseGeometry:
    union = shapely.union_all(geoms)
    grown = shapely.simplify(shapely.buffer(union, margin), margin / 2)
    parts = [shapely.Polygon(part.exterior) for part in shapely.get_parts(grown)]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _column_type(series: Any) -> str:
    kind = getattr(series.dtype, "kind", "O")
    if kind in "iufb":
        return str(series.dtype)
    if kind == "M":
        return "timestamp"
    return "string"


def table_columns(
    frame: gpd.GeoDataFrame, descriptions: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """``table:columns`` entries for a frame (types as pandas/numpy names, like CoRE Stack)."""
    known = {**KNOWN_COLUMNS, **(descriptions or {})}
    columns: list[dict[str, str]] = []
    for name in frame.columns:
        kind = "geometry" if name == frame.geometry.name else _column_type(frame[name])
        entry = {"name": str(name), "type": kind}
        if name in known:
            entry["description"] = known[name]
        columns.append(entry)
    return columns


def corestack_collection(
    collection_id: str,
    title: str,
    description: str,
    extent: tuple[Sequence[float], tuple[datetime | None, datetime | None]],
    keywords: Sequence[str],
    providers: Sequence[pystac.Provider] = (),
) -> pystac.Collection:
    """A collection of CoRE Stack tables (table extension, CoRE Stack's licence; pure)."""
    bbox, interval = extent
    collection = pystac.Collection(
        id=collection_id,
        title=title,
        description=description,
        extent=pystac.Extent(
            pystac.SpatialExtent([list(bbox)]), pystac.TemporalExtent([list(interval)])
        ),
        license=CORESTACK_LICENSE,
        keywords=list(keywords),
        providers=list(providers) or None,
        stac_extensions=[TABLE_SCHEMA_URI],
    )
    collection.add_link(
        pystac.Link("license", "https://spdx.org/licenses/CC-BY-4.0.html", "text/html")
    )
    return collection


def create_mws_collection(
    bbox: Sequence[float], interval: tuple[datetime | None, datetime | None]
) -> pystac.Collection:
    """The ``corestack-mws`` collection (pure: extent passed in)."""
    return corestack_collection(
        MWS_COLLECTION_ID,
        "CoRE Stack micro-watersheds",
        "CoRE Stack micro-watershed (MWS) layers, one item per administrative block, as "
        "GeoParquet (and GeoJSON) keyed by `uid`: the polygons the TESSERA embeddings are "
        "summarised over (see the corestack-mws-embeddings collection).",
        (bbox, interval),
        ["CoRE Stack", "micro-watershed", "hydrology", "India"],
        [
            pystac.Provider(
                "CoRE Stack",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
                url="https://core-stack.org/",
            ),
            pystac.Provider(
                "tessera-stac", roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST]
            ),
        ],
    )


def create_mws_item(
    block: BlockName,
    layer: MwsLayer,
    assets: dict[str, AssetRecord],
    now: datetime,
    valid: tuple[datetime, datetime],
) -> pystac.Item:
    """The STAC Item of one block's MWS layer (pure: no I/O, ``now`` passed in).

    The item's time is the interval the layer is valid for (``valid``: the watersheds are
    joined to every year's embeddings in it), not its publication time, which goes in
    ``created``/``updated``: a year-filtered search then finds the layer beside that year.
    """
    state, district, block_key = block.keys
    item = pystac.Item(
        id=block.mws_item_id,
        geometry=shapely.geometry.mapping(footprint(layer.frame)),
        bbox=[round(v, 8) for v in layer.bbox],
        datetime=valid[0],
        start_datetime=valid[0],
        end_datetime=valid[1],
        properties={},
        collection=MWS_COLLECTION_ID,
        stac_extensions=[TABLE_SCHEMA_URI, FILE_SCHEMA_URI],
    )
    item.properties.update(
        {
            "title": f"Micro-watersheds of {block.block} block, {block.district}, {block.state}",
            "description": (
                f"{len(layer.frame)} CoRE Stack micro-watersheds (MWS) keyed by `uid`, EPSG:4326."
            ),
            "corestack:state": state,
            "corestack:district": district,
            "corestack:block": block_key,
            "corestack:layer": MWS_LAYER_NAME,
            "created": pystac.utils.datetime_to_str(now),
            "updated": pystac.utils.datetime_to_str(now),
            "table:primary_geometry": "geometry",
            "table:row_count": len(layer.frame),
            "table:columns": table_columns(layer.frame),
        }
    )
    for key, record in assets.items():
        asset = pystac.Asset(
            href=record.href,
            media_type=record.media_type,
            roles=list(record.roles),
            title={
                "data": "MWS layer (GeoParquet)",
                "geojson": "MWS layer (GeoJSON)",
                "map": "Map of the MWS polygons (web-mercator image over the item's bbox)",
            }.get(key),
        )
        asset.extra_fields["file:size"] = record.size
        asset.extra_fields["file:checksum"] = record.checksum
        item.add_asset(key, asset)
    return item


# -------------------------------------------------------------------------------- writing
def asset_record(path: Path, key: str, media_type: str, roles: Iterable[str]) -> AssetRecord:
    """Describe a written file (href relative to its item folder)."""
    return AssetRecord(
        key=key,
        href=f"./{path.name}",
        media_type=media_type,
        size=path.stat().st_size,
        checksum=multihash(sha256_file(path)),
        roles=tuple(roles),
    )


def bbox_of(items: Iterable[dict[str, Any]]) -> list[float]:
    """Union bbox of item dicts (the whole world when none has one)."""
    boxes = np.array([[float(v) for v in d["bbox"][:4]] for d in items if d.get("bbox")])
    if not len(boxes):
        return [-180.0, -90.0, 180.0, 90.0]
    return [*map(float, boxes[:, :2].min(axis=0)), *map(float, boxes[:, 2:].max(axis=0))]


def open_stores(root: str | Path, s3_url: str | None, storage: Any = None) -> list[Store]:
    """The local catalog root, and the S3 mirror when ``s3_url`` is given (mirror first)."""
    from tessera_stac.catalog.store_settings import StorageSettings

    stores: list[Store] = [open_store(str(root))]
    if s3_url:
        if not is_s3(s3_url) or len(s3_url) <= len("s3://"):
            raise InputError(f"not an s3:// URL: {s3_url!r}")
        stores.insert(0, open_store(s3_url, storage or StorageSettings()))
    return stores


def publish_item_folder(
    stores: Sequence[Store],
    collection_id: str,
    item_id: str,
    write: Callable[[Path], dict[str, Any]],
    make_collection: Callable[[list[float], tuple[datetime | None, datetime | None]], Any],
) -> list[str]:
    """Publish ``{collection}/{item}/`` to each store: staged whole, then swapped in.

    Args:
        stores: where to publish (an S3 mirror before the local root: the local swap moves
            the staged folder).
        collection_id, item_id: the folder's keys.
        write: writes the assets into the folder it is given; returns the Item dict.
        make_collection: ``(bbox, interval) -> pystac.Collection`` over all items present.

    Returns:
        Every key written to the S3 stores (with their prefix).
    """
    first = stores[-1].stage(f"{collection_id}/{item_id}")
    try:
        item = write(first)
        key = f"{collection_id}/{item_id}/{item_id}.json"
        (first / f"{item_id}.json").write_bytes(dump_json(item_links(item, key, collection_id)))
    except BaseException:
        shutil.rmtree(first, ignore_errors=True)
        raise
    uploaded: list[str] = []
    for store in stores:
        staged = first
        if store is not stores[-1]:
            staged = store.stage(f"{collection_id}/{item_id}")
            shutil.copytree(first, staged, dirs_exist_ok=True)
        written = list(store.put_folder(staged, f"{collection_id}/{item_id}"))
        items = read_items(store, collection_id)
        collection = make_collection(bbox_of(items), temporal_extent(items))
        cdict = collection.to_dict(include_self_link=False, transform_hrefs=False)
        written += [put_collection(store, cdict, items), CATALOG_KEY]
        if is_s3(store.uri):
            uploaded += [store.join(k).split("/", 3)[3] for k in written]
    return uploaded


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish_mws_layer` wrote."""

    item_id: str
    item_path: Path
    collection_path: Path
    row_count: int
    warnings: tuple[str, ...]
    s3_keys: tuple[str, ...] = field(default_factory=tuple)


def write_mws_files(layer: MwsLayer, folder: Path, item_id: str) -> dict[str, AssetRecord]:
    """Write the GeoParquet and GeoJSON assets into ``folder``; return their records."""
    parquet = folder / f"{item_id}.parquet"
    layer.frame.to_parquet(
        parquet, index=False, compression="zstd", schema_version="1.1.0", write_covering_bbox=True
    )
    geojson = folder / f"{item_id}.geojson"
    geojson.write_text(layer.frame.to_json(drop_id=True, to_wgs84=False))
    records = {
        "data": asset_record(parquet, "data", PARQUET_MEDIA_TYPE, ("data",)),
        "geojson": asset_record(geojson, "geojson", GEOJSON_MEDIA_TYPE, ("data",)),
    }
    if len(layer.frame):
        from tessera_stac.publisher.overlay import distinct_colours, render_overlay

        png = folder / f"{item_id}_map.png"
        west, south, east, north = (round(float(v), 8) for v in layer.frame.total_bounds)
        colours = distinct_colours(len(layer.frame))
        render_overlay(layer.frame, colours, png, (west, south, east, north), edge="black")
        records["map"] = asset_record(png, "map", "image/png", ("overview", "visual"))
    return records


def publish_mws_layer(
    path: str | Path,
    block: BlockName,
    root: str | Path,
    *,
    now: datetime | None = None,
    valid_years: tuple[int, int] | None = None,
    drop_empty: bool = False,
    s3_url: str | None = None,
    storage: Any = None,
) -> PublishResult:
    """Publish an MWS layer as ``{root}/corestack-mws/{item_id}/`` + collection + root link.

    Args:
        path: the layer file (see :func:`read_mws_layer`).
        block: state/district/block names (normalised as CoRE Stack does for ids).
        root: the catalog root folder (beside the embedding collection).
        now: publication time, the item's ``created``/``updated`` (default: now, UTC).
        valid_years: first and last year the layer describes (default: the TESSERA years,
            2017 to ``now``'s year), the item's ``start_datetime``/``end_datetime``.
        drop_empty: drop MWS with empty geometries instead of failing.
        s3_url: also publish the same keys under ``s3://bucket/prefix``.
        storage: ``StorageSettings`` for S3 (default: from the environment).

    Raises:
        InputError: the layer is unusable; nothing is written then.
    """
    layer = read_mws_layer(path, drop_empty=drop_empty)
    now = now or datetime.now(UTC)
    interval = valid_interval(valid_years or (FIRST_TESSERA_YEAR, now.year))
    item_id = block.mws_item_id
    stores = open_stores(root, s3_url, storage)

    def write(folder: Path) -> dict[str, Any]:
        records = write_mws_files(layer, folder, item_id)
        item = create_mws_item(block, layer, records, now, interval)
        return dict(item.to_dict(include_self_link=False, transform_hrefs=False))

    keys = publish_item_folder(
        stores,
        MWS_COLLECTION_ID,
        item_id,
        write,
        lambda bbox, times: create_mws_collection(bbox, times),
    )
    folder = Path(stores[-1].uri) / MWS_COLLECTION_ID
    return PublishResult(
        item_id=item_id,
        item_path=folder / item_id / f"{item_id}.json",
        collection_path=folder / "collection.json",
        row_count=len(layer.frame),
        warnings=layer.warnings,
        s3_keys=tuple(keys),
    )


def valid_interval(years: tuple[int, int]) -> tuple[datetime, datetime]:
    """``(first, last)`` years -> start of the first, end of the last (UTC)."""
    first, last = years
    if first > last:
        raise InputError(f"valid years {first}-{last}: the first is after the last")
    return datetime(first, 1, 1, tzinfo=UTC), datetime(last, 12, 31, 23, 59, 59, tzinfo=UTC)

"""CoRE Stack micro-watershed (MWS) layers: read, check, and publish as GeoParquet + STAC.

Parse -> build -> write, as in stactools packages:

* :func:`read_mws_layer` reads a layer in any of the formats CoRE Stack hands out (GeoServer WFS
  GeoJSON with its legacy ``crs`` member, GeoPackage, shapefile, GeoParquet), checks it (uid
  present and unique, polygonal non-empty geometries, a known CRS) and returns an
  :class:`MwsLayer` in EPSG:4326, repairing what can be repaired and listing it in ``warnings``.
* :func:`create_mws_item` / :func:`create_mws_collection` are pure STAC builders.
* :func:`publish_mws_layer` writes ``{root}/corestack-mws/{item_id}/`` (GeoParquet, GeoJSON,
  item JSON) beside the embedding collection, updates the collection and root catalog, and
  optionally mirrors the same keys to S3. Nothing is half-written: files are staged and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import shapely
from shapely.geometry.base import BaseGeometry

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import AssetRecord

MWS_COLLECTION_ID = "corestack-mws"
MWS_LAYER_NAME = "mws"
UID_COLUMN = "uid"
TABLE_SCHEMA = "https://stac-extensions.github.io/table/v1.2.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
GEOJSON_MEDIA_TYPE = "application/geo+json"
CORESTACK_LICENSE = "CC-BY-4.0"
ROOT_CATALOG_ID = "tessera-stac"
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
def footprint(frame: gpd.GeoDataFrame, margin: float = 0.002) -> BaseGeometry:
    """Outline covering every MWS: grown by ``margin`` degrees, simplified, holes dropped.

    The union of MWS traced from a 30 m DEM is a ~100 kB staircase; the footprint keeps the
    item small and still contains every polygon (the simplification tolerance is half the
    margin), so a spatial search never misses the layer.
    """
    union = shapely.union_all(np.asarray(frame.geometry.values))
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


def create_mws_collection(
    bbox: Sequence[float], interval: tuple[datetime, datetime | None]
) -> pystac.Collection:
    """The ``corestack-mws`` collection (pure: extent passed in)."""
    collection = pystac.Collection(
        id=MWS_COLLECTION_ID,
        title="CoRE Stack micro-watersheds",
        description=(
            "CoRE Stack micro-watershed (MWS) layers, one item per administrative block, as "
            "GeoParquet (and GeoJSON) keyed by `uid`: the polygons the TESSERA embeddings are "
            "summarised over (see the corestack-mws-embeddings collection)."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([list(bbox)]), pystac.TemporalExtent([list(interval)])
        ),
        license=CORESTACK_LICENSE,
        keywords=["CoRE Stack", "micro-watershed", "hydrology", "India"],
        providers=[
            pystac.Provider(
                "CoRE Stack",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
                url="https://core-stack.org/",
            ),
            pystac.Provider(
                "tessera-stac", roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST]
            ),
        ],
        stac_extensions=[TABLE_SCHEMA],
    )
    collection.add_link(
        pystac.Link("license", "https://spdx.org/licenses/CC-BY-4.0.html", "text/html")
    )
    return collection


def create_mws_item(
    block: BlockName,
    layer: MwsLayer,
    assets: dict[str, AssetRecord],
    now: datetime,
) -> pystac.Item:
    """The STAC Item of one block's MWS layer (pure: no I/O, ``now`` passed in)."""
    state, district, block_key = block.keys
    item = pystac.Item(
        id=block.mws_item_id,
        geometry=shapely.geometry.mapping(footprint(layer.frame)),
        bbox=[round(v, 8) for v in layer.bbox],
        datetime=now,
        properties={},
        collection=MWS_COLLECTION_ID,
        stac_extensions=[TABLE_SCHEMA, FILE_SCHEMA],
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
def multihash_sha256(path: Path) -> str:
    """``file:checksum`` value: sha2-256 multihash (hex) of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "1220" + digest.hexdigest()


def asset_record(path: Path, key: str, media_type: str, roles: Iterable[str]) -> AssetRecord:
    """Describe a written file (href relative to its item folder)."""
    return AssetRecord(
        key=key,
        href=f"./{path.name}",
        media_type=media_type,
        size=path.stat().st_size,
        checksum=multihash_sha256(path),
        roles=tuple(roles),
    )


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temp file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def replace_dir(staged: Path, target: Path) -> None:
    """Put a fully written folder in place of ``target`` (old one removed after the swap)."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_dir(parent: Path, name: str) -> Path:
    """A fresh hidden folder beside the final one (same filesystem, so rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def item_dict(item: pystac.Item, collection_href: str, root_href: str) -> dict[str, Any]:
    """Item JSON with relative structural links for a static catalog."""
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    kept = [
        ln
        for ln in data.get("links", [])
        if ln.get("rel") not in ("root", "parent", "collection", "self")
    ]
    data["links"] = [
        {"rel": "root", "href": root_href, "type": "application/json"},
        {"rel": "parent", "href": collection_href, "type": "application/json"},
        {"rel": "collection", "href": collection_href, "type": "application/json"},
        *kept,
    ]
    return data


def link_child(root: Path, child_href: str, title: str) -> None:
    """Add a ``child`` link to ``{root}/catalog.json`` (created when missing)."""
    path = root / "catalog.json"
    if path.exists():
        data = json.loads(path.read_text())
    else:
        data = {
            "type": "Catalog",
            "id": ROOT_CATALOG_ID,
            "stac_version": "1.1.0",
            "description": "TESSERA embeddings and CoRE Stack micro-watersheds",
            "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}],
        }
    data = merge_child_link(data, child_href, title)
    write_json_atomic(path, data)


def merge_child_link(catalog: dict[str, Any], child_href: str, title: str) -> dict[str, Any]:
    """Return ``catalog`` with a child link to ``child_href`` (no duplicate)."""
    links = catalog.setdefault("links", [])
    norm = child_href.removeprefix("./")
    if not any(
        link.get("rel") == "child" and str(link.get("href", "")).removeprefix("./") == norm
        for link in links
    ):
        links.append(
            {"rel": "child", "href": child_href, "type": "application/json", "title": title}
        )
    return catalog


def collection_extent(items: Iterable[dict[str, Any]]) -> tuple[list[float], list[datetime]]:
    """Union bbox and [min, max] datetime of item dicts."""
    boxes: list[list[float]] = []
    times: list[datetime] = []
    for data in items:
        if data.get("bbox"):
            boxes.append([float(v) for v in data["bbox"][:4]])
        props = data.get("properties", {})
        for key in ("datetime", "start_datetime", "end_datetime"):
            if props.get(key):
                times.append(datetime.fromisoformat(str(props[key]).replace("Z", "+00:00")))
    if not boxes:
        boxes = [[-180.0, -90.0, 180.0, 90.0]]
    arr = np.array(boxes)
    bbox = [
        float(arr[:, 0].min()),
        float(arr[:, 1].min()),
        float(arr[:, 2].max()),
        float(arr[:, 3].max()),
    ]
    return bbox, sorted(times)


def read_items_in(collection_dir: Path) -> list[dict[str, Any]]:
    """Item dicts at ``{collection}/{item}/{item}.json``."""
    out: list[dict[str, Any]] = []
    for path in sorted(collection_dir.glob("*/*.json")):
        if path.parent.name.startswith(".") or path.stem != path.parent.name:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("type") == "Feature":
            out.append(data)
    return out


def write_collection(
    root: Path,
    collection: pystac.Collection,
    items: list[dict[str, Any]],
) -> Path:
    """Write ``{root}/{id}/collection.json`` with item links and the extent of ``items``."""
    folder = root / collection.id
    bbox, times = collection_extent(items)
    collection.extent = pystac.Extent(
        pystac.SpatialExtent([bbox]),
        pystac.TemporalExtent([[times[0] if times else None, times[-1] if times else None]]),
    )
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    data["links"] = [
        link for link in data["links"] if link["rel"] not in ("root", "parent", "item", "self")
    ]
    data["links"][:0] = [
        {"rel": "root", "href": "../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
    ]
    for item in sorted(items, key=lambda d: str(d["id"])):
        data["links"].append(
            {"rel": "item", "href": f"./{item['id']}/{item['id']}.json", "type": GEOJSON_MEDIA_TYPE}
        )
    path = folder / "collection.json"
    write_json_atomic(path, data)
    link_child(root, f"./{collection.id}/collection.json", collection.title or collection.id)
    return path


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
    drop_empty: bool = False,
    s3_url: str | None = None,
    storage: Any = None,
) -> PublishResult:
    """Publish an MWS layer as ``{root}/corestack-mws/{item_id}/`` + collection + root link.

    Args:
        path: the layer file (see :func:`read_mws_layer`).
        block: state/district/block names (normalised as CoRE Stack does for ids).
        root: the catalog root folder (beside the embedding collection).
        now: item datetime (publication time; default: the current UTC time).
        drop_empty: drop MWS with empty geometries instead of failing.
        s3_url: also upload the same keys under ``s3://bucket/prefix``.
        storage: ``StorageSettings`` for S3 (default: from the environment).

    Raises:
        InputError: the layer is unusable; nothing is written then.
    """
    layer = read_mws_layer(path, drop_empty=drop_empty)
    root = Path(root)
    now = now or datetime.now(UTC)
    item_id = block.mws_item_id
    collection_dir = root / MWS_COLLECTION_ID
    staged = staging_dir(collection_dir, item_id)
    try:
        records = write_mws_files(layer, staged, item_id)
        item = create_mws_item(block, layer, records, now)
        data = item_dict(item, "../collection.json", "../../catalog.json")
        write_json_atomic(staged / f"{item_id}.json", data)
        replace_dir(staged, collection_dir / item_id)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    items = read_items_in(collection_dir)
    bbox, times = collection_extent(items)
    collection = create_mws_collection(bbox, (times[0], times[-1]))
    collection_path = write_collection(root, collection, items)
    keys: tuple[str, ...] = ()
    if s3_url:
        keys = mirror_to_s3(
            root,
            [collection_dir / item_id, collection_path],
            s3_url,
            storage,
        )
    return PublishResult(
        item_id=item_id,
        item_path=collection_dir / item_id / f"{item_id}.json",
        collection_path=collection_path,
        row_count=len(layer.frame),
        warnings=layer.warnings,
        s3_keys=keys,
    )


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at the ends)."""
    if not url.startswith("s3://") or len(url) <= 5:
        raise InputError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def mirror_to_s3(
    root: Path, paths: Sequence[Path], s3_url: str, storage: Any = None
) -> tuple[str, ...]:
    """Upload files/folders under ``root`` to the same keys below ``s3_url``.

    Data files go first, JSON documents after them, and the root ``catalog.json`` on S3 is
    merged (child links added) rather than overwritten.
    """
    import boto3

    from tessera_stac.publisher.settings import StorageSettings

    settings = storage or StorageSettings()
    client = boto3.client("s3", **settings.boto3_client_kwargs())
    bucket, prefix = parse_s3_url(s3_url)
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    files.sort(key=lambda p: p.suffix == ".json")
    keys: list[str] = []
    for file in files:
        key = "/".join(filter(None, [prefix, file.relative_to(root).as_posix()]))
        client.upload_file(str(file), bucket, key)
        keys.append(key)
    cat_key = "/".join(filter(None, [prefix, "catalog.json"]))
    local = json.loads((root / "catalog.json").read_text())
    try:
        remote = json.loads(client.get_object(Bucket=bucket, Key=cat_key)["Body"].read())
    except client.exceptions.NoSuchKey:
        remote = None
    merged = local if remote is None else remote
    for link in local.get("links", []):
        if link.get("rel") == "child":
            merged = merge_child_link(merged, link["href"], link.get("title", ""))
    client.put_object(
        Bucket=bucket,
        Key=cat_key,
        Body=json.dumps(merged, indent=2).encode(),
        ContentType="application/json",
    )
    keys.append(cat_key)
    return tuple(keys)

"""Embedding access routes (OGC API - EDR flavoured): position, positions, area.

* ``GET /embeddings/position?lon=&lat=&year=``: the dequantised vector at a point;
* ``POST /embeddings/positions``: the same for a batch of points (one result per point, errors
  included per point);
* ``POST /embeddings/area``: zonal statistics (pixel count, valid fraction, mean vector) of the
  pixels whose centre lies in a GeoJSON geometry, summed across tiles and UTM zones.

The item for a point is found with a pgSTAC search (the point, the year) over the embedding
collections (``ApiSettings.embedding_collections``); among the tiles touching it, the point
belongs to the one whose 0.1° cell holds it (``GridCell.containing``). Every answer says which
collection, item, asset, pixel (row/col) and CRS it read. A point outside the published tiles
is a 404, an invalid pixel (water, unprocessed, bad scale) a 422, each with the reason.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tessera_stac.api.bounds import BoundError, header_qualities, plan_area, split_antimeridian
from tessera_stac.api.readers import (
    Pixel,
    PointValue,
    ReadError,
    dataset_cache,
    in_read_pool,
    read_area,
    read_many,
    read_point,
)
from tessera_stac.catalog.constants import EMBEDDING_DIM
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.reader import DatasetCache

router = APIRouter(prefix="/embeddings", tags=["Embeddings"])
CACHE_SECONDS = 30.0


# ------------------------------------------------------------------------------ models
class ErrorBody(BaseModel):
    """A STAC API error."""

    code: str
    description: str


class PixelModel(BaseModel):
    """The pixel that was read, in the asset's own grid."""

    row: int = Field(description="Row in the asset (0 = top).")
    col: int = Field(description="Column in the asset (0 = left).")
    crs: str = Field(description="CRS of the asset grid, e.g. EPSG:32643.")
    x: float = Field(description="Easting of the pixel centre in that CRS.")
    y: float = Field(description="Northing of the pixel centre in that CRS.")


class Link(BaseModel):
    """A link to the STAC object that was read."""

    rel: str
    href: str
    type: str = "application/geo+json"


class PositionResult(BaseModel):
    """The embedding at one point (or why there is none)."""

    lon: float
    lat: float
    year: int
    collection: str | None = None
    item: str | None = Field(default=None, description="Id of the STAC item read.")
    asset: str | None = Field(default=None, description="Key of the int8 embeddings asset.")
    scale_asset: str | None = Field(default=None, description="Key of the float32 scales asset.")
    href: str | None = Field(default=None, description="Href of the embeddings asset.")
    pixel: PixelModel | None = None
    scale: float | None = Field(
        default=None, description="The pixel's scale (per-pixel-scale recipes)."
    )
    dimensions: int | None = None
    embedding: list[float] | None = Field(
        default=None, description="Dequantised vector: int8 code x scale (float32 values)."
    )
    links: list[Link] = Field(default_factory=list)
    error: ErrorBody | None = Field(default=None, description="Set when the point has no value.")
    status: int = Field(default=200, description="HTTP status this point would have alone.")


class Point(BaseModel):
    """A WGS84 point."""

    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)


class PositionsRequest(BaseModel):
    """A batch of points for one year."""

    points: list[Point] = Field(
        min_length=1, description="At most ApiSettings.max_points (default 10,000) points: 413."
    )
    year: int = Field(ge=1900, le=2100)
    collection: str | None = Field(default=None, description="Embedding collection id.")


class PositionsResponse(BaseModel):
    """One result per requested point, in order."""

    results: list[PositionResult]


class AreaRequest(BaseModel):
    """A GeoJSON (Multi)Polygon in WGS84 and a year."""

    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon (EPSG:4326).")
    year: int = Field(ge=1900, le=2100)
    collection: str | None = Field(default=None, description="Embedding collection id.")


class AreaSource(BaseModel):
    """One item read for an area, and the window of its asset that was read."""

    collection: str
    item: str
    asset: str
    href: str
    crs: str | None = None
    window: dict[str, int]
    count: int
    valid: int


class AreaResponse(BaseModel):
    """Zonal statistics: pixels whose centre is inside, each counted in one tile only."""

    year: int
    collection: str
    count: int = Field(description="Pixels whose centre lies in the geometry.")
    valid: int = Field(description="Of those, pixels holding a valid embedding.")
    valid_fraction: float | None
    dimensions: int | None
    mean: list[float] | None = Field(description="Mean dequantised vector of the valid pixels.")
    sources: list[AreaSource]


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No published tile covers the point/area."},
    413: {"model": ErrorBody, "description": "Over a bound (pixels, tiles, points, body)."},
    422: {"model": ErrorBody, "description": "Invalid pixel (water, unprocessed) or input."},
    503: {"model": ErrorBody, "description": "The database is unavailable."},
    504: {"model": ErrorBody, "description": "The database did not answer in time."},
}


# ------------------------------------------------------------------------------ lookups
def readers(request: Request) -> DatasetCache:
    """The app's cached dataset handles (created on first use)."""
    state = request.app.state
    cache: DatasetCache | None = getattr(state, "readers", None)
    if cache is None:
        settings = state.api_settings
        prefix = settings.root_path.rstrip("/") + "/data/"
        cache = dataset_cache(settings.reader_cache_size, settings.data_dir, prefix)
        state.readers = cache
    return cache


async def embedding_collections(request: Request, wanted: str | None) -> list[str]:
    """The embedding collection ids to search (all matching the setting, or ``wanted``)."""
    state = request.app.state
    cached = getattr(state, "embedding_collection_ids", None)
    if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
        async with state.get_connection(request, "r") as conn:
            rows = await conn.fetch("SELECT id FROM pgstac.collections ORDER BY id")
        patterns = [p.strip() for p in state.api_settings.embedding_collections.split(",")]
        ids = [r["id"] for r in rows if any(fnmatch.fnmatchcase(r["id"], p) for p in patterns)]
        cached = (time.monotonic(), ids)
        state.embedding_collection_ids = cached
    ids = list(cached[1])
    if wanted is not None:
        if wanted not in ids:
            raise ReadError(404, "NotFound", f"no embedding collection {wanted!r}")
        return [wanted]
    if not ids:
        raise ReadError(404, "NotFound", "no embedding collection is loaded")
    return ids


async def search_items(
    request: Request, collections: list[str], geometry: dict[str, Any], year: int, limit: int
) -> list[dict[str, Any]]:
    """pgSTAC search: items of ``collections`` intersecting ``geometry`` in ``year``."""
    body = {
        "collections": collections,
        "intersects": geometry,
        "datetime": f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
        "limit": limit,
    }
    async with request.app.state.get_connection(request, "r") as conn:
        result = await conn.fetchval("SELECT pgstac.search($1::text::jsonb)", json.dumps(body))
    features: list[dict[str, Any]] = (result or {}).get("features", [])
    return features


def _choose(items: list[dict[str, Any]], cell: GridCell, year: int, collections: list[str]) -> Any:
    """The item of ``cell`` among the search results, or the ReadError to give."""
    if not items:
        return ReadError(
            404,
            "OutsideCoverage",
            f"no published tile for {cell.name} in {year} (collections: {', '.join(collections)})",
        )
    if len({i["collection"] for i in items}) > 1:
        return ReadError(
            422,
            "AmbiguousCollection",
            "several embedding collections cover this point: pass collection= one of "
            + ", ".join(sorted({i["collection"] for i in items})),
        )
    return items[0]


async def items_for_cells(
    request: Request, cells: list[GridCell], year: int, collection: str | None
) -> dict[str, Any]:
    """Per cell name, the item whose 0.1° cell it is in ``year``, or the ReadError to give.

    One pgSTAC search for all the cells not in the short-lived cache; answers are cached,
    "no tile here" too.
    """
    collections = await embedding_collections(request, collection)
    state = request.app.state
    cache: dict[Any, tuple[float, Any]] | None = getattr(state, "item_cache", None)
    if cache is None:
        cache = state.item_cache = {}
    now = time.monotonic()
    out: dict[str, Any] = {}
    missing: dict[str, GridCell] = {}
    for cell in cells:
        hit = cache.get((tuple(collections), cell.name, year))
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            out[cell.name] = hit[1]
        else:
            missing[cell.name] = cell
    if not missing:
        return out
    centres = [[c.lon, c.lat] for c in missing.values()]
    geometry = {"type": "MultiPoint", "coordinates": centres}
    limit = 4 * len(centres) * len(collections) + 20
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for item in await search_items(request, collections, geometry, year, limit):
        bbox = item.get("bbox")
        if bbox and len(bbox) >= 4:
            own = GridCell.containing((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
            by_cell.setdefault(own.name, []).append(item)
    if len(cache) > 10_000:
        cache.clear()
    for name, cell in missing.items():
        out[name] = _choose(by_cell.get(name, []), cell, year, collections)
        cache[(tuple(collections), name, year)] = (now, out[name])
    return out


async def item_for_point(
    request: Request, lon: float, lat: float, year: int, collection: str | None
) -> dict[str, Any]:
    """The item whose 0.1° cell holds (lon, lat) in ``year`` (cached briefly)."""
    cell = GridCell.containing(lon, lat)
    found = (await items_for_cells(request, [cell], year, collection))[cell.name]
    if isinstance(found, ReadError):
        raise found
    return dict(found)


def _item_link(request: Request, item: dict[str, Any]) -> Link:
    base = str(request.base_url).rstrip("/")
    return Link(rel="item", href=f"{base}/collections/{item['collection']}/items/{item['id']}")


def _result(
    request: Request, lon: float, lat: float, year: int, item: dict[str, Any], value: PointValue
) -> PositionResult:
    """The answer for one point (``GET /embeddings/position``): the batch's :func:`_row` with
    its embedding, as the model (one set of fields for both routes)."""
    row = _row(lon, lat, year, item, value, [_item_link(request, item).model_dump()])
    return PositionResult.model_validate({**row, "embedding": value.vector.tolist()})


def _row(
    lon: float, lat: float, year: int, item: dict[str, Any], value: PointValue, links: list[Any]
) -> dict[str, Any]:
    """One point of a batch as its JSON object (:class:`PositionResult` dumped without its
    ``None`` fields, ``embedding`` left to the writer): built directly, a thousand points in
    about a millisecond rather than a model each (a test holds it equal to the model's dump)."""
    pixel = value.pixel
    row: dict[str, Any] = {
        "lon": lon,
        "lat": lat,
        "year": year,
        "collection": item["collection"],
        "item": item["id"],
        "asset": value.asset,
    }
    if value.scale_asset is not None:
        row["scale_asset"] = value.scale_asset
    row["href"] = value.href
    row["pixel"] = {
        "row": pixel.row,
        "col": pixel.col,
        "crs": pixel.crs,
        "x": pixel.x,
        "y": pixel.y,
    }
    if value.scale is not None:
        row["scale"] = value.scale
    row["dimensions"] = int(value.vector.shape[0])
    row["links"] = links
    row["status"] = 200
    return row


def _failed(lon: float, lat: float, year: int, exc: ReadError) -> dict[str, Any]:
    """A point of a batch without a value, as its JSON object (see :func:`_row`)."""
    return {
        "lon": lon,
        "lat": lat,
        "year": year,
        "links": [],
        "error": {"code": exc.code, "description": exc.description},
        "status": exc.status,
    }


async def position(
    request: Request, lon: float, lat: float, year: int, collection: str | None
) -> PositionResult:
    """The result for one point; ReadError when there is no value."""
    item = await item_for_point(request, lon, lat, year, collection)
    value = await in_read_pool(read_point, readers(request), item, lon, lat)
    return _result(request, lon, lat, year, item, value)


async def positions(
    request: Request, points: list[Point], year: int, collection: str | None
) -> list[tuple[dict[str, Any], Any]]:
    """Results for a batch: one search for all cells, then per item one batched block read.

    Each result is a point's JSON object (:func:`_row`, :func:`_failed`) without
    ``embedding``, with its float32 vector (None without a value): :func:`positions_json`
    and :func:`positions_arrow` write both.
    """
    # the points grouped by cell, each cell made and named once
    by_key: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(points):
        by_key.setdefault(GridCell.index_of(p.lon, p.lat), []).append(i)
    cells = [GridCell.of_index(key) for key in by_key]
    found = await items_for_cells(request, cells, year, collection)
    results: list[tuple[dict[str, Any], Any] | None] = [None] * len(points)
    groups: dict[tuple[str, str], list[int]] = {}
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for cell, idx in zip(cells, by_key.values(), strict=True):
        item = found[cell.name]
        if isinstance(item, ReadError):
            for i in idx:
                results[i] = (_failed(points[i].lon, points[i].lat, year, item), None)
        else:
            key = (item["collection"], item["id"])
            groups.setdefault(key, []).extend(idx)
            items[key] = item
    cache = readers(request)

    async def read_item(key: tuple[str, str], idx: list[int]) -> None:
        item = items[key]
        lons = [points[i].lon for i in idx]
        lats = [points[i].lat for i in idx]
        try:
            values = await in_read_pool(read_many, cache, item, lons, lats)
        except ReadError as exc:
            values = [exc] * len(idx)
        links = [_item_link(request, item).model_dump()]  # the same for every point of the item
        for i, value in zip(idx, values, strict=True):
            p = points[i]
            results[i] = (
                (_failed(p.lon, p.lat, year, value), None)
                if isinstance(value, ReadError)
                else (_row(p.lon, p.lat, year, item, value, links), value.vector)
            )

    # the items are read side by side by the read threads (opening a tile's COGs the first
    # time is mostly waiting on files and GDAL, which release the GIL)
    await asyncio.gather(*(read_item(key, sorted(idx)) for key, idx in groups.items()))
    return [r for r in results if r is not None]


def positions_json(results: list[tuple[dict[str, Any], Any]]) -> bytes:
    """The ``PositionsResponse`` JSON of a batch, serialised in one go by orjson: float32
    vectors written in their shortest float32 form (each parses back to the same float32; half
    the bytes of float64 text), 10,000 x 128 values in a fraction of a second."""
    import orjson

    out = []
    for result, vector in results:
        row = dict(result)
        if vector is not None:
            row["embedding"] = np.asarray(vector, dtype=np.float32)
        out.append(row)
    return orjson.dumps({"results": out}, option=orjson.OPT_SERIALIZE_NUMPY)


ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: ``f`` values of ``POST /embeddings/positions`` (JSON, or an Arrow IPC stream)
POSITION_FORMATS = ("json", "arrow")


def positions_format(request: Request, f: str | None) -> str:
    """``json`` or ``arrow``: the ``f`` parameter when given (one of :data:`POSITION_FORMATS`),
    else the ``Accept`` header (Arrow only when it is asked for by name)."""
    if f is not None:
        if f not in POSITION_FORMATS:
            raise ValueError(f"f must be one of {sorted(POSITION_FORMATS)}, got {f!r}")
        return f
    weights = header_qualities(request.headers.get("accept", ""))
    arrow = weights.get(ARROW_STREAM, 0.0)
    json_ = max(weights.get("application/json", 0.0), weights.get("*/*", 0.0))
    return "arrow" if arrow > 0 and arrow >= json_ else "json"


def positions_arrow(results: list[tuple[dict[str, Any], Any]], year: int) -> bytes:
    """A batch as an Arrow IPC stream: one row per requested point, in order, the columns of
    the JSON results flattened (``row``/``col``/``crs`` of the pixel, ``error`` and
    ``error_description``) and ``embedding`` a ``fixed_size_list<float32>[dimensions]``, null
    where the point has no value (its slots hold NaN, so ``.values`` reshaped to
    ``(n, dimensions)`` is a float32 array with NaN rows). The same float32 bits as the JSON.
    """
    import pyarrow as pa

    n = len(results)
    # no point with a value: the published dimension count (a list type needs a size > 0)
    dims = next((len(v) for _, v in results if v is not None), EMBEDDING_DIM)
    vectors = np.full((n, dims), np.nan, dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "lon", "lat", "status", "error", "error_description", "collection", "item",
            "row", "col", "crs", "scale",
        )
    }  # fmt: skip
    for k, (result, vector) in enumerate(results):
        if vector is not None:
            vectors[k] = vector
            valid[k] = True
        pixel = result.get("pixel") or {}
        error = result.get("error") or {}
        cols["lon"].append(result["lon"])
        cols["lat"].append(result["lat"])
        cols["status"].append(result["status"])
        cols["error"].append(error.get("code"))
        cols["error_description"].append(error.get("description"))
        cols["collection"].append(result.get("collection"))
        cols["item"].append(result.get("item"))
        cols["row"].append(pixel.get("row"))
        cols["col"].append(pixel.get("col"))
        cols["crs"].append(pixel.get("crs"))
        cols["scale"].append(result.get("scale"))
    embedding = pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), type=pa.float32()), dims, mask=pa.array(~valid)
    )
    table = pa.table(
        {
            "lon": pa.array(cols["lon"], pa.float64()),
            "lat": pa.array(cols["lat"], pa.float64()),
            "status": pa.array(cols["status"], pa.int16()),
            "error": pa.array(cols["error"], pa.string()).dictionary_encode(),
            "error_description": pa.array(cols["error_description"], pa.string()),
            "collection": pa.array(cols["collection"], pa.string()).dictionary_encode(),
            "item": pa.array(cols["item"], pa.string()).dictionary_encode(),
            "row": pa.array(cols["row"], pa.int32()),
            "col": pa.array(cols["col"], pa.int32()),
            "crs": pa.array(cols["crs"], pa.string()).dictionary_encode(),
            "scale": pa.array(cols["scale"], pa.float32()),
            "embedding": embedding,
        },
        metadata={"year": str(year), "dimensions": str(dims)},
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def warm_up() -> None:
    """Build what the first positions request would otherwise build (pydantic's validator and
    serialisers of these models, orjson) and warm the read path (:func:`readers.warm_up`)."""
    from tessera_stac.api import readers as readers_module

    PositionsRequest.model_validate({"points": [{"lon": 0.0, "lat": 0.0}], "year": 2024})
    value = PointValue(
        Pixel(0, 0, "EPSG:32643", 0.5, 0.5), 0.1, np.zeros(1, dtype=np.float32), "a", "s", "h"
    )
    sample = _row(0.0, 0.0, 2024, {"collection": "c", "id": "i"}, value, [])
    failed = _failed(0.0, 0.0, 2024, ReadError(404, "OutsideCoverage", "warm-up"))
    positions_json([(sample, np.zeros(1, dtype=np.float32)), (failed, None)])
    positions_arrow([(sample, np.zeros(1, dtype=np.float32)), (failed, None)], 2024)
    readers_module.warm_up()


def _union(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """The smallest window holding windows ``a`` and ``b``."""
    row0, col0 = min(a["row_off"], b["row_off"]), min(a["col_off"], b["col_off"])
    row1 = max(a["row_off"] + a["height"], b["row_off"] + b["height"])
    col1 = max(a["col_off"] + a["width"], b["col_off"] + b["width"])
    return {"row_off": row0, "col_off": col0, "height": row1 - row0, "width": col1 - col0}


def _error(exc: ReadError | BoundError) -> JSONResponse:
    return JSONResponse(
        status_code=exc.status, content={"code": exc.code, "description": exc.description}
    )


# ------------------------------------------------------------------------------- routes
@router.get(
    "/position",
    response_model=PositionResult,
    response_model_exclude_none=True,
    responses=ERRORS,
    summary="Dequantised embedding at a point for a year",
)
async def get_position(
    request: Request,
    lon: float = Query(ge=-180, le=180, description="Longitude (WGS84)."),
    lat: float = Query(ge=-90, le=90, description="Latitude (WGS84)."),
    year: int = Query(ge=1900, le=2100, description="Year of the annual embedding."),
    collection: str | None = Query(default=None, description="Embedding collection id."),
) -> Any:
    """The 128-d vector (int8 code x per-pixel scale) of the pixel holding the point."""
    try:
        return await position(request, lon, lat, year, collection)
    except ReadError as exc:
        return _error(exc)


@router.post(
    "/positions",
    response_model=PositionsResponse,
    response_model_exclude_none=True,
    responses={
        **ERRORS,
        200: {
            "description": "One result per point: JSON, or an Arrow IPC stream (`f=arrow` or "
            f"`Accept: {ARROW_STREAM}`) with one row per point and `embedding` a "
            "fixed-size list of float32.",
            "content": {ARROW_STREAM: {}},
        },
        400: {"model": ErrorBody, "description": "An invalid request (e.g. an unknown `f`)."},
    },
    summary="Dequantised embeddings at a batch of points",
)
async def post_positions(
    request: Request,
    body: PositionsRequest,
    f: Literal["json", "arrow"] | None = Query(
        default=None,
        description="Answer format: `json` (default) or `arrow` (an Arrow IPC stream, also "
        f"chosen by `Accept: {ARROW_STREAM}`).",
    ),
) -> Any:
    """One result per point, in order; a point without a value carries ``error``/``status``.

    Up to ``ApiSettings.max_points`` points: one catalogue search for the batch, then per item each
    touched COG block is read once. As JSON or as an Arrow IPC stream (the same values: a script
    gets a float32 array without parsing text).
    """
    fmt = positions_format(request, f)  # f is one of them (checked by its type: 400 else)
    max_points = request.app.state.api_settings.max_points
    if len(body.points) > max_points:
        return _error(
            ReadError(
                413,
                "TooManyPoints",
                f"{len(body.points)} points; at most {max_points} per request "
                "(TESSERA_STAC_API_MAX_POINTS)",
            )
        )
    try:
        await embedding_collections(request, body.collection)
        results = await positions(request, body.points, body.year, body.collection)
    except ReadError as exc:
        return _error(exc)
    if fmt == "arrow":
        return Response(positions_arrow(results, body.year), media_type=ARROW_STREAM)
    return Response(positions_json(results), media_type="application/json")


def _check_geometry(geometry: dict[str, Any]) -> Any:
    from shapely.geometry import shape

    if geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise ReadError(
            422, "InvalidGeometry", "geometry must be a GeoJSON Polygon or MultiPolygon"
        )
    try:
        shp = shape(geometry)
    except Exception as exc:
        raise ReadError(422, "InvalidGeometry", f"not GeoJSON: {exc}") from None
    if shp.is_empty or not shp.is_valid:
        raise ReadError(422, "InvalidGeometry", "the geometry is empty or invalid")
    west, south, east, north = shp.bounds
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise ReadError(422, "InvalidGeometry", "coordinates must be WGS84 lon/lat")
    return shp


@router.post(
    "/area",
    response_model=AreaResponse,
    responses=ERRORS,
    summary="Zonal statistics of the embeddings in a GeoJSON geometry",
)
async def post_area(request: Request, body: AreaRequest) -> Any:
    """Count, valid fraction and mean vector of the pixels whose centre is in the geometry."""
    settings = request.app.state.api_settings
    try:
        _check_geometry(body.geometry)
        geometry = split_antimeridian(body.geometry)
        collections = await embedding_collections(request, body.collection)
        limit = settings.zonal_max_tiles + 1
        items = await search_items(request, collections, geometry, body.year, limit)
        if not items:
            raise ReadError(
                404, "OutsideCoverage", f"no published tile meets the geometry in {body.year}"
            )
        chosen = {i["collection"] for i in items}
        if len(chosen) > 1:
            raise ReadError(
                422,
                "AmbiguousCollection",
                "several embedding collections cover this area: pass collection= one of "
                + ", ".join(sorted(chosen)),
            )
        plan = plan_area(items, geometry, settings)
        if not plan:
            raise ReadError(
                404, "OutsideCoverage", f"no published tile meets the geometry in {body.year}"
            )
        return await _area(request, body, plan)
    except (ReadError, BoundError) as exc:
        return _error(exc)


async def _area(
    request: Request, body: AreaRequest, plan: list[tuple[dict[str, Any], list[dict[str, Any]]]]
) -> AreaResponse:
    """Sum tile by tile, strip by strip (``bounds.plan_area``): memory stays bounded."""
    cache = readers(request)
    settings = request.app.state.api_settings
    # one piece is about zonal_block_pixels: a window far larger means the item's grid metadata
    # misled the plan, and is refused rather than read
    max_pixels = min(settings.zonal_max_pixels, 4 * settings.zonal_block_pixels)
    count = valid = 0
    total: Any = None
    sources: list[AreaSource] = []
    for item, strips in plan:
        source: AreaSource | None = None
        for strip in strips:
            sums, window = await run_in_threadpool(read_area, cache, item, strip, max_pixels)
            count += sums.count
            valid += sums.valid
            if sums.total is not None:
                total = sums.total if total is None else total + sums.total
            if not sums.count:
                continue
            crs, asset, href = (window.pop(k, None) for k in ("crs", "asset", "href"))
            if source is None:
                source = AreaSource(
                    collection=item["collection"],
                    item=item["id"],
                    asset=str(asset),
                    href=str(href),
                    crs=crs,
                    window=window,
                    count=0,
                    valid=0,
                )
                sources.append(source)
            source.window = _union(source.window, window)
            source.count += sums.count
            source.valid += sums.valid
    mean = None if total is None else (total / valid).astype(np.float32).tolist()
    return AreaResponse(
        year=body.year,
        collection=plan[0][0]["collection"],
        count=count,
        valid=valid,
        valid_fraction=(valid / count) if count else None,
        dimensions=None if mean is None else len(mean),
        mean=mean,
        sources=sources,
    )

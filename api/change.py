"""Change between two years (DESIGN §7): at a point, over a polygon, per micro-watershed.

The measure is defined once, in :mod:`tessera_stac.catalog.change`: cosine distance of the two
years' dequantised vectors of a pixel; for an area, of its two mean vectors, plus the share of
its pixels whose own distance exceeds a threshold; pixels invalid in either year never count.

* ``GET /embeddings/change?lon&lat&from&to`` - the pixel's distance (and both vectors' items).
* ``POST /embeddings/change`` ``{geometry, from, to, threshold?}`` - an area's change (pixel
  centre in the polygon, each pixel in the tile whose 0.1° cell holds it).
* ``GET /watersheds/{uid}/change?from&to`` - from the published ``corestack-mws-change`` table
  of that pair of years (``tessera-stac watersheds change``); without one, the distance of the
  two years' join means (``changed_share`` then null).
* ``GET /watersheds/change?from&to&item&limit`` - the watersheds of a block (a change item), or
  of every loaded block, ranked by distance, most changed first.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tessera_stac.api.embeddings import (
    _check_geometry,
    embedding_collections,
    position,
    readers,
    search_items,
)
from tessera_stac.api.readers import ReadError
from tessera_stac.api.watersheds import _read_bytes, _tables
from tessera_stac.catalog.change import DEFAULT_THRESHOLD, ChangeSums, cosine_distance
from tessera_stac.catalog.constants import CHANGE_COLLECTION_ID
from tessera_stac.catalog.model import GridCell

router = APIRouter(tags=["Change"])

YEAR_FROM = Query(..., alias="from", ge=1900, le=2200, description="The earlier year")
YEAR_TO = Query(..., alias="to", ge=1900, le=2200, description="The later year")


def _error(exc: ReadError) -> JSONResponse:
    return JSONResponse(
        status_code=exc.status, content={"code": exc.code, "description": exc.description}
    )


def _num(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


# -------------------------------------------------------------------------------- point
@router.get("/embeddings/change", summary="Change of the pixel at a point between two years")
async def point_change(
    request: Request,
    lon: float = Query(ge=-180, le=180, description="Longitude (WGS84)."),
    lat: float = Query(ge=-90, le=90, description="Latitude (WGS84)."),
    year_from: int = YEAR_FROM,
    year_to: int = YEAR_TO,
    collection: str | None = Query(default=None, description="Embedding collection id."),
) -> Any:
    """Cosine distance between the pixel's dequantised vectors of the two years."""
    try:
        a = await position(request, lon, lat, year_from, collection)
        b = await position(request, lon, lat, year_to, collection)
    except ReadError as exc:
        return _error(exc)
    dist, ok = cosine_distance(np.asarray(a.embedding), np.asarray(b.embedding))
    return {
        "lon": lon,
        "lat": lat,
        "from": year_from,
        "to": year_to,
        "collection": a.collection,
        "items": [a.item, b.item],
        "pixel": a.pixel.model_dump() if a.pixel is not None else None,
        "distance": float(dist) if bool(ok) else None,
    }


# ---------------------------------------------------------------------------- a polygon
class AreaChangeRequest(BaseModel):
    """An area and two years."""

    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon (WGS84).")
    year_from: int = Field(alias="from", ge=1900, le=2200)
    year_to: int = Field(alias="to", ge=1900, le=2200)
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0, le=2)
    collection: str | None = None


@dataclass(frozen=True)
class _Pair:
    cell: GridCell
    a: dict[str, Any]
    b: dict[str, Any]


def _cell_of(item: dict[str, Any]) -> GridCell:
    bbox = item.get("bbox") or [0, 0, 0, 0]
    return GridCell.containing((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)


def _read_pair(
    request: Request, pair: _Pair, geometry: dict[str, Any], sums: ChangeSums, max_pixels: int
) -> int:
    """Add the pixels of one cell (centre in the polygon and the cell) to ``sums``."""
    from rasterio.warp import transform_geom
    from rasterio.windows import Window, from_bounds
    from shapely import contains_xy
    from shapely.geometry import shape

    from tessera_stac.catalog.reader import EmbeddingReader

    cache = readers(request)

    def reader(item: dict[str, Any]) -> EmbeddingReader:
        local = json.loads(json.dumps(item))
        for key in local.get("assets", {}):
            local["assets"][key]["href"] = cache.path_for(str(item["assets"][key]["href"]))
        local["links"] = [ln for ln in local.get("links", []) if ln.get("rel") != "self"]
        return EmbeddingReader(local)

    with reader(pair.a) as ra, reader(pair.b) as rb:
        grid = ra.profile()
        if grid != rb.profile():
            raise ReadError(
                409, "GridMismatch", f"{pair.a['id']} and {pair.b['id']} are on different grids"
            )
        from affine import Affine

        transform = Affine(*grid.transform)
        minx, miny, maxx, maxy = shape(transform_geom("EPSG:4326", grid.crs, geometry)).bounds
        pad = 30.0
        win = from_bounds(minx - pad, miny - pad, maxx + pad, maxy + pad, transform)
        win = win.round_offsets().round_lengths()
        try:
            win = win.intersection(Window(0, 0, grid.shape[1], grid.shape[0]))
        except Exception:  # rasterio's WindowError: they do not meet
            return 0
        if win.width * win.height > max_pixels:
            raise ReadError(422, "AreaTooLarge", f"the geometry covers more than {max_pixels} px")
        ranges = win.toranges()
        va, _ = ra.read(ranges)
        vb, _ = rb.read(ranges)
    from pyproj import Transformer

    (r0, r1), (c0, c1) = ranges
    rows, cols = np.mgrid[r0:r1, c0:c1]
    xs = transform.c + (cols + 0.5) * transform.a
    ys = transform.f + (rows + 0.5) * transform.e
    lons, lats = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    west, south, east, north = pair.cell.bounds
    inside = (lons >= west) & (lons < east) & (lats >= south) & (lats < north)
    inside &= contains_xy(shape(geometry), lons, lats)
    sums.add(np.zeros(int(inside.sum()), dtype=np.int64), va[inside], vb[inside])
    return int(inside.sum())


@router.post("/embeddings/change", summary="Change of an area between two years")
async def area_change(request: Request, body: AreaChangeRequest) -> Any:
    """Distance of the area's two mean vectors and the share of changed pixels."""
    try:
        _check_geometry(body.geometry)
        collections = await embedding_collections(request, body.collection)
        found = {
            year: {
                _cell_of(i).name: i
                for i in await search_items(request, collections, body.geometry, year, 500)
            }
            for year in (body.year_from, body.year_to)
        }
        cells = sorted(set(found[body.year_from]) & set(found[body.year_to]))
        if not cells:
            raise ReadError(
                404, "OutsideCoverage", "no cell under the geometry has tiles of both years"
            )
        sums = ChangeSums(1, 128, body.threshold)
        max_pixels = request.app.state.api_settings.zonal_max_pixels
        counted = 0
        for name in cells:
            pair = _Pair(
                GridCell.parse(name), found[body.year_from][name], found[body.year_to][name]
            )
            counted += await run_in_threadpool(
                _read_pair, request, pair, body.geometry, sums, max_pixels
            )
    except ReadError as exc:
        return _error(exc)
    result = sums.result(0)
    return {
        "from": body.year_from,
        "to": body.year_to,
        "pixels_in_area": counted,
        "cells": cells,
        **result.as_dict(),
    }


# --------------------------------------------------------------------------- watersheds
@dataclass(frozen=True)
class ChangeTable:
    """One published per-MWS change table (one block, one pair of years)."""

    item_id: str
    uids: np.ndarray
    distance: np.ndarray
    changed_share: np.ndarray
    pixels: np.ndarray
    threshold: float | None


async def _change_items(request: Request, year_from: int, year_to: int) -> list[dict[str, Any]]:
    search = {"collections": [CHANGE_COLLECTION_ID], "limit": 10000}
    async with request.app.state.get_connection(request, "r") as conn:
        result = await conn.fetchval("SELECT pgstac.search($1::text::jsonb)", json.dumps(search))
    if isinstance(result, str | bytes):
        result = json.loads(result)
    features: list[dict[str, Any]] = (result or {}).get("features", [])
    return [
        f
        for f in features
        if f.get("properties", {}).get("tessera:year_from") == year_from
        and f.get("properties", {}).get("tessera:year_to") == year_to
    ]


def _load_change(item: dict[str, Any], data_dir: Any) -> ChangeTable:
    import pyarrow.parquet as pq

    href = item["assets"]["data"]["href"]
    table = pq.read_table(
        io.BytesIO(_read_bytes(href, data_dir)),
        columns=["uid", "distance", "changed_share", "pixels"],
    )
    return ChangeTable(
        item_id=str(item["id"]),
        uids=np.asarray(table["uid"].to_pylist(), dtype=object),
        distance=table["distance"].to_numpy(zero_copy_only=False).astype(np.float64),
        changed_share=table["changed_share"].to_numpy(zero_copy_only=False).astype(np.float64),
        pixels=table["pixels"].to_numpy().astype(np.int64),
        threshold=item.get("properties", {}).get("tessera:change_threshold"),
    )


async def _change_tables(request: Request, year_from: int, year_to: int) -> list[ChangeTable]:
    data_dir = getattr(getattr(request.app.state, "api_settings", None), "data_dir", None)
    items = await _change_items(request, year_from, year_to)
    return [await run_in_threadpool(_load_change, item, data_dir) for item in items]


def _row(table: ChangeTable, i: int) -> dict[str, Any]:
    return {
        "uid": str(table.uids[i]),
        "item": table.item_id,
        "distance": _num(table.distance[i]),
        "changed_share": _num(table.changed_share[i]),
        "pixels": int(table.pixels[i]),
    }


@router.get(
    "/watersheds/{uid}/change",
    summary="Change of a micro-watershed between two years",
    responses={404: {"description": "Unknown uid or years"}},
)
async def mws_change(
    request: Request, uid: str, year_from: int = YEAR_FROM, year_to: int = YEAR_TO
) -> dict[str, Any]:
    """From the published change table; else the distance of the two joins' mean vectors."""
    for table in await _change_tables(request, year_from, year_to):
        hits = np.flatnonzero(table.uids == uid)
        if len(hits):
            return {
                "from": year_from,
                "to": year_to,
                "source": "change table",
                "threshold": table.threshold,
                **_row(table, int(hits[0])),
            }
    means = []
    for year in (year_from, year_to):
        rows = [(t, t.row(uid)) for t in await _tables(request, year)]
        hit = [(t, r) for t, r in rows if r is not None]
        if not hit:
            raise HTTPException(404, f"no MWS with uid {uid!r} joined for {year}")
        means.append(hit[0][0].means[hit[0][1]])
    dist, ok = cosine_distance(means[0], means[1])
    return {
        "uid": uid,
        "from": year_from,
        "to": year_to,
        "source": "join means",
        "distance": float(dist) if bool(ok) else None,
        "changed_share": None,
    }


@router.get("/watersheds/change", summary="Micro-watersheds ranked by change, most first")
async def mws_change_ranking(
    request: Request,
    year_from: int = YEAR_FROM,
    year_to: int = YEAR_TO,
    item: str | None = Query(None, description="A change item (one block); default: all"),
    limit: int = Query(20, ge=1, le=10000),
) -> dict[str, Any]:
    """Watersheds of one block (or all loaded) by cosine distance of their mean vectors."""
    tables = [
        t
        for t in await _change_tables(request, year_from, year_to)
        if item is None or t.item_id == item
    ]
    if not tables:
        raise HTTPException(
            404,
            f"no per-MWS change table for {year_from}->{year_to}"
            + (f" in item {item!r}" if item else "")
            + " (run tessera-stac watersheds change and load it)",
        )
    rows = [(t, i) for t in tables for i in range(len(t.uids)) if np.isfinite(t.distance[i])]
    rows.sort(key=lambda r: (-r[0].distance[r[1]], str(r[0].uids[r[1]])))
    return {
        "from": year_from,
        "to": year_to,
        "items": [t.item_id for t in tables],
        "results": [_row(t, i) for t, i in rows[:limit]],
    }

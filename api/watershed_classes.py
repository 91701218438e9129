"""Land cover per micro-watershed: the class areas ``tessera-stac watersheds classes`` publishes.

The tables are items of ``corestack-mws-classes`` in pgSTAC (loaded by ``tessera-stac load``)
whose ``data`` asset is a GeoParquet keyed by ``uid``: per class ``{class}_in_ha`` and
``{class}_percent``, ``classified_in_ha``, ``nodata_in_ha``, ``flag``; the item's
``tessera:model`` names the head and ``tessera:classes`` its classes. Tables are found through
``pgstac.search`` and cached by href + checksum (the watershed routes' cache).

* ``GET /watersheds/{uid}/classes?model=NAME[&year=Y]``: hectares and percent of every class in
  one MWS for a year; without ``year``, every loaded year in CoRE Stack's time-series shape
  (``annual: {time: [...], <metric>: [...]}``, ``annual_units``).
* ``GET /watersheds/classes?model=NAME&class=C&year=Y[&by=percent|ha][&limit=N]``: the MWS
  ranked by the share (or hectares) of a class, across every block loaded for that year.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from tessera_stac.api.caches import LruCache
from tessera_stac.api.classify import check_name
from tessera_stac.api.watersheds import CACHE_SIZE, _read_bytes
from tessera_stac.catalog.constants import MWS_CLASSES_COLLECTION_ID

router = APIRouter(tags=["Watersheds"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad model or class name"},
    404: {"description": "Unknown uid, model, class or year"},
    409: {"description": "Ambiguous"},
}
MODEL_QUERY = Query(..., description="Name of the head (its class maps' model)", max_length=63)
MAX_YEARS_ROWS = 200  # tables one request may read (years x blocks)


@dataclass(frozen=True)
class ClassTable:
    """One published per-MWS class table (one block, one model, one year)."""

    item_id: str
    year: int
    classes: list[dict[str, Any]]  # value, name, color, column
    uids: np.ndarray  # (n,) object
    hectares: np.ndarray  # (n, classes) float64
    percent: np.ndarray  # (n, classes) float64
    classified: np.ndarray  # (n,)
    nodata: np.ndarray  # (n,)
    flag: np.ndarray  # (n,) object

    def row(self, uid: str) -> int | None:
        """Row of ``uid`` or None."""
        hits = np.flatnonzero(self.uids == uid)
        return int(hits[0]) if len(hits) else None

    def column(self, wanted: str) -> int:
        """Index of the class named ``wanted`` (its name or column stem, any case); 404."""
        key = wanted.strip().lower()
        for i, c in enumerate(self.classes):
            if key in (str(c["name"]).lower(), str(c["column"]).lower()):
                return i
        names = ", ".join(str(c["name"]) for c in self.classes)
        raise HTTPException(404, f"no class {wanted[:64]!r} in this model (classes: {names})")


#: parsed class tables keyed by ("classes", href, checksum), LRU
_cache = LruCache(CACHE_SIZE)


def parse_class_table(item: dict[str, Any], raw: bytes) -> ClassTable:
    """Parse a per-MWS class GeoParquet (the columns the routes need)."""
    import pyarrow.parquet as pq

    props = item.get("properties", {})
    if props.get("tessera:task") == "regression":
        raise HTTPException(
            400,
            f"model {props.get('tessera:model')!r} is a regression head: its per-MWS means "
            f"(value_mean) are in the data asset of item {item.get('id')!r}, not class areas",
        )
    classes = list(props.get("tessera:classes") or [])
    ha = [f"{c['column']}_in_ha" for c in classes]
    pct = [f"{c['column']}_percent" for c in classes]
    cols = ["uid", *ha, *pct, "classified_in_ha", "nodata_in_ha", "flag"]
    table = pq.read_table(io.BytesIO(raw), columns=cols)

    def stack(names: list[str]) -> np.ndarray:
        if not names:
            return np.zeros((table.num_rows, 0))
        return np.column_stack(
            [table[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in names]
        )

    return ClassTable(
        item_id=str(item["id"]),
        year=int(props.get("tessera:year") or str(props.get("start_datetime"))[:4]),
        classes=classes,
        uids=np.asarray(table["uid"].to_pylist(), dtype=object),
        hectares=stack(ha),
        percent=stack(pct),
        classified=stack(["classified_in_ha"])[:, 0],
        nodata=stack(["nodata_in_ha"])[:, 0],
        flag=np.asarray(table["flag"].to_pylist(), dtype=object),
    )


def load_class_table(item: dict[str, Any], data_dir: Any) -> ClassTable:
    """The table of a class item (cached by href + checksum)."""
    asset = item.get("assets", {}).get("data")
    if not asset:
        raise HTTPException(500, f"item {item.get('id')} has no data asset")
    key = ("classes", str(asset["href"]), str(asset.get("file:checksum", "")))
    cached: ClassTable | None = _cache.get(key)
    if cached is not None:
        return cached
    try:
        table = parse_class_table(item, _read_bytes(key[1], data_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise HTTPException(
            502, f"cannot read the per-MWS class table of item {item.get('id')}: {exc}"
        ) from exc
    _cache.put(key, table)
    return table


async def class_items(request: Request, model: str, year: int | None) -> list[dict[str, Any]]:
    """The yearly class items of ``model`` (of ``year``, or every year) in pgSTAC."""
    from tessera_stac.api.db import get_connection

    search: dict[str, Any] = {
        "collections": [MWS_CLASSES_COLLECTION_ID],
        "limit": MAX_YEARS_ROWS + 1,
        "fields": {"include": ["id", "collection", "assets", "properties"]},
        "filter-lang": "cql2-json",
        "filter": {
            "op": "and",
            "args": [
                {"op": "=", "args": [{"property": "tessera:model"}, model]},
                {"op": "=", "args": [{"property": "corestack:layer"}, "mws_classes"]},
            ],
        },
    }
    if year is not None:
        search["datetime"] = f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z"
    async with get_connection(request, "r") as conn:
        result = await conn.fetchval("SELECT pgstac.search($1::text::jsonb)", json.dumps(search))
    if isinstance(result, str | bytes):
        result = json.loads(result)
    features: list[dict[str, Any]] = (result or {}).get("features", [])
    if len(features) > MAX_YEARS_ROWS:
        raise HTTPException(413, f"more than {MAX_YEARS_ROWS} class tables match; give year=")
    return features


async def tables(request: Request, model: str, year: int | None) -> list[ClassTable]:
    """The parsed tables of ``model`` (404 when none is loaded)."""
    items = await class_items(request, check_name(model), year)
    if not items:
        when = f" for {year}" if year is not None else ""
        raise HTTPException(404, f"no per-MWS class table of model {model!r} loaded{when}")
    data_dir = getattr(getattr(request.app.state, "api_settings", None), "data_dir", None)
    return [await run_in_threadpool(load_class_table, item, data_dir) for item in items]


def _num(value: Any) -> float | None:
    number = float(value)
    return round(number, 6) if np.isfinite(number) else None


def _link(request: Request, item_id: str) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    return {
        "rel": "derived_from",
        "href": f"{base}/collections/{MWS_CLASSES_COLLECTION_ID}/items/{item_id}",
        "type": "application/geo+json",
    }


def _one(table: ClassTable, row: int) -> dict[str, Any]:
    return {
        "classes": [
            {
                "value": int(c["value"]),
                "name": c["name"],
                "color": c.get("color"),
                f"{c['column']}_in_ha": _num(table.hectares[row, i]),
                f"{c['column']}_percent": _num(table.percent[row, i]),
            }
            for i, c in enumerate(table.classes)
        ],
        "classified_in_ha": _num(table.classified[row]),
        "nodata_in_ha": _num(table.nodata[row]),
        "flag": str(table.flag[row]),
    }


@router.get(
    "/watersheds/{uid}/classes",
    summary="Hectares and percent of each class in a micro-watershed",
    responses=RESPONSES,
)
async def mws_classes(
    request: Request,
    uid: str,
    model: str = MODEL_QUERY,
    year: int | None = Query(None, ge=1900, le=2200, description="Year (default: every year)"),
    item: str | None = Query(None, description="Class table item id, when uid is ambiguous"),
) -> dict[str, Any]:
    """One MWS: its class areas for ``year``, or every loaded year in CoRE Stack's shape."""
    found = [
        (t, r)
        for t in await tables(request, model, year)
        if item is None or t.item_id == item
        for r in [t.row(uid)]
        if r is not None
    ]
    if not found:
        raise HTTPException(404, f"no MWS with uid {uid[:80]!r} in the class tables of {model!r}")
    years = sorted({t.year for t, _ in found})
    if len(found) > len(years):
        names = ", ".join(sorted(t.item_id for t, _ in found))
        raise HTTPException(409, f"uid {uid!r} is in several blocks ({names}); pass item=")
    found.sort(key=lambda tr: tr[0].year)
    if year is not None:
        table, row = found[0]
        return {
            "uid": uid,
            "model": model,
            "year": table.year,
            "item": table.item_id,
            **_one(table, row),
            "links": [_link(request, table.item_id)],
        }
    first = found[0][0]
    annual: dict[str, Any] = {"time": years}
    units: dict[str, str] = {}
    for i, c in enumerate(first.classes):
        annual[f"{c['column']}_in_ha"] = [_num(t.hectares[r, i]) for t, r in found]
        annual[f"{c['column']}_percent"] = [_num(t.percent[r, i]) for t, r in found]
        units[f"{c['column']}_in_ha"], units[f"{c['column']}_percent"] = "ha", "%"
    annual["classified_in_ha"] = [_num(t.classified[r]) for t, r in found]
    units["classified_in_ha"] = "ha"
    return {
        "uid": uid,
        "model": model,
        "classes": [{k: c[k] for k in ("value", "name", "color", "column")} for c in first.classes],
        "annual": annual,
        "annual_units": units,
        "links": [_link(request, t.item_id) for t, _ in found],
    }


@router.get(
    "/watersheds/classes",
    summary="Micro-watersheds ranked by the share (or hectares) of a class",
    responses=RESPONSES,
)
async def rank_classes(
    request: Request,
    model: str = MODEL_QUERY,
    class_: str = Query(..., alias="class", max_length=64, description="Class name or column"),
    year: int = Query(..., ge=1900, le=2200, description="Year of the class maps"),
    by: Literal["percent", "ha"] = Query("percent", description="Rank by share or hectares"),
    order: Literal["desc", "asc"] = Query("desc", description="Largest (desc) or smallest first"),
    limit: int = Query(20, ge=1, le=1000, description="How many MWS to return"),
) -> dict[str, Any]:
    """The MWS of every loaded block ranked by a class (MWS without classified pixels left out)."""
    found = await tables(request, model, year)
    rows: list[tuple[float, str, str, float, float]] = []
    for table in found:
        i = table.column(class_)
        values = table.percent[:, i] if by == "percent" else table.hectares[:, i]
        usable = np.isfinite(values) & (table.classified > 0)
        for r in np.flatnonzero(usable):
            rows.append(
                (
                    float(values[r]),
                    str(table.uids[r]),
                    table.item_id,
                    float(table.hectares[r, i]),
                    float(table.percent[r, i]),
                )
            )
    sign = -1.0 if order == "desc" else 1.0
    rows.sort(key=lambda t: (sign * t[0], t[1]))
    chosen = found[0].classes[found[0].column(class_)]
    column = chosen["column"]
    return {
        "model": model,
        "year": year,
        "class": {k: chosen[k] for k in ("value", "name", "color", "column")},
        "by": by,
        "order": order,
        "count": len(rows),
        "results": [
            {
                "uid": uid,
                "item": item_id,
                f"{column}_in_ha": _num(ha),
                f"{column}_percent": _num(pct),
            }
            for _, uid, item_id, ha, pct in rows[:limit]
        ],
    }

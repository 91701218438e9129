"""Micro-watershed routes: the mean embedding vector of an MWS, and the MWS most like it.

Both read the per-MWS tables that ``tessera-stac watersheds join`` publishes: items of the
``corestack-mws-embeddings`` collection in pgSTAC whose ``data`` asset is a GeoParquet keyed by
``uid`` (count, valid fraction, flag, 128 float32 means). The tables are found through pgSTAC
(``pgstac.search`` by collection and the year's interval) and cached by href + checksum.

* ``GET /watersheds/{uid}/embedding?year=Y`` - the mean vector (``null`` when the MWS has no
  valid pixel), its pixel count and valid fraction, and the item it came from.
* ``GET /watersheds/{uid}/similar?year=Y&k=10&scope=block|all`` - the ``k`` MWS with the highest
  cosine similarity of their mean vectors, within the MWS's block or across every block loaded
  for that year (MWS without valid pixels are left out).

``router`` is mounted by ``tessera_stac.api.app.create_app``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from tessera_stac.api.caches import LruCache
from tessera_stac.catalog.constants import BAND_NAMES, EMBEDDING_DIM, JOIN_COLLECTION_ID

router = APIRouter(tags=["Watersheds"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown uid or year"},
    409: {"description": "Ambiguous"},
}
YEAR_QUERY = Query(..., description="Year of the embeddings", ge=1900, le=2200)
ITEM_QUERY = Query(None, description="Join item id, when the uid is in several blocks")

CACHE_SIZE = 32


@dataclass(frozen=True)
class MwsTable:
    """One published per-MWS table (one block, one year)."""

    item_id: str
    collection: str
    uids: np.ndarray  # (n,) str
    count: np.ndarray  # (n,) int64
    valid_fraction: np.ndarray  # (n,) float64
    flag: np.ndarray  # (n,) str
    means: np.ndarray  # (n, 128) float32, NaN rows where count == 0

    def row(self, uid: str) -> int | None:
        """Row of ``uid`` or None."""
        hits = np.flatnonzero(self.uids == uid)
        return int(hits[0]) if len(hits) else None


#: parsed tables keyed by (href, checksum), LRU
_cache = LruCache(CACHE_SIZE)


def _read_bytes(href: str, data_dir: Path | None) -> bytes:
    """Bytes of an asset: a local path, a file under the API's /data, or an http(s) URL."""
    parts = urlsplit(href)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path)).read_bytes()
    if data_dir is not None and "/data/" in parts.path:
        from tessera_stac.api.files import resolve_data_path

        local = resolve_data_path(data_dir, unquote(parts.path.split("/data/", 1)[1]))
        if local is not None:
            return local.read_bytes()
    import httpx

    response = httpx.get(href, timeout=30, follow_redirects=True)
    response.raise_for_status()
    return response.content


def parse_table(item: dict[str, Any], raw: bytes) -> MwsTable:
    """Parse a per-MWS GeoParquet (only the columns the routes need)."""
    import pyarrow.parquet as pq

    names = list(BAND_NAMES)
    table = pq.read_table(
        io.BytesIO(raw), columns=["uid", "count", "valid_fraction", "flag", *names]
    )
    means = np.column_stack([table[n].to_numpy(zero_copy_only=False) for n in names])
    return MwsTable(
        item_id=str(item["id"]),
        collection=str(item.get("collection", JOIN_COLLECTION_ID)),
        uids=np.asarray(table["uid"].to_pylist(), dtype=object),
        count=table["count"].to_numpy().astype(np.int64),
        valid_fraction=table["valid_fraction"].to_numpy(zero_copy_only=False),
        flag=np.asarray(table["flag"].to_pylist(), dtype=object),
        means=means.astype(np.float32),
    )


def load_table(item: dict[str, Any], data_dir: Path | None) -> MwsTable:
    """The table of a join item (cached by href + checksum)."""
    asset = item.get("assets", {}).get("data")
    if not asset:
        raise HTTPException(500, f"item {item.get('id')} has no data asset")
    key = (str(asset["href"]), str(asset.get("file:checksum", "")))
    cached = _cache.get(key)
    if cached is not None:
        return cached
    try:
        table = parse_table(item, _read_bytes(key[0], data_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise HTTPException(
            502, f"cannot read the per-MWS table of item {item.get('id')} at {key[0]}: {exc}"
        ) from exc
    _cache.put(key, table)
    return table


async def _join_items(request: Request, year: int) -> list[dict[str, Any]]:
    """Every join item of ``year`` in pgSTAC (hydrated, through ``pgstac.search``)."""
    from tessera_stac.api.db import get_connection

    search = {
        "collections": [JOIN_COLLECTION_ID],
        "datetime": f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
        "limit": 10000,
        "fields": {"include": ["id", "collection", "assets", "properties"]},
    }
    async with get_connection(request, "r") as conn:
        result = await conn.fetchval("SELECT pgstac.search($1::text::jsonb)", json.dumps(search))
    if isinstance(result, str | bytes):
        result = json.loads(result)
    features: list[dict[str, Any]] = (result or {}).get("features", [])
    return features


async def _tables(request: Request, year: int) -> list[MwsTable]:
    items = await _join_items(request, year)
    if not items:
        raise HTTPException(404, f"no per-MWS embedding table loaded for year {year}")
    data_dir = getattr(getattr(request.app.state, "api_settings", None), "data_dir", None)
    return [await run_in_threadpool(load_table, item, data_dir) for item in items]


def _locate(tables: list[MwsTable], uid: str, item: str | None) -> tuple[MwsTable, int]:
    hits = [
        (t, r)
        for t in tables
        if (item is None or t.item_id == item)
        for r in [t.row(uid)]
        if r is not None
    ]
    if not hits:
        raise HTTPException(404, f"no MWS with uid {uid!r} in the loaded tables")
    if len(hits) > 1:
        names = ", ".join(t.item_id for t, _ in hits)
        raise HTTPException(409, f"uid {uid!r} is in several blocks ({names}); pass item=")
    return hits[0]


def _vector(values: np.ndarray) -> list[float] | None:
    return None if not np.isfinite(values).all() else [float(v) for v in values]


def _item_link(request: Request, table: MwsTable) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    return {
        "rel": "derived_from",
        "href": f"{base}/collections/{table.collection}/items/{table.item_id}",
        "type": "application/geo+json",
    }


@dataclass(frozen=True)
class Target:
    """The MWS a route is about: its uid, the year, the year's tables and its row."""

    uid: str
    year: int
    tables: list[MwsTable]
    table: MwsTable
    row: int


async def target(
    request: Request, uid: str, year: int = YEAR_QUERY, item: str | None = ITEM_QUERY
) -> Target:
    """Dependency of the routes: find ``uid`` in the year's tables (404/409 otherwise)."""
    tables = await _tables(request, year)
    table, row = _locate(tables, uid, item)
    return Target(uid, year, tables, table, row)


@router.get(
    "/watersheds/{uid}/embedding",
    summary="Mean embedding vector of a micro-watershed for a year",
    responses=RESPONSES,
)
async def mws_embedding(request: Request, at: Annotated[Target, Depends(target)]) -> dict[str, Any]:
    """The per-MWS summary of ``uid``: mean dequantised vector (null without valid pixels)."""
    uid, year, table, row = at.uid, at.year, at.table, at.row
    return {
        "uid": uid,
        "year": year,
        "item": table.item_id,
        "count": int(table.count[row]),
        "valid_fraction": _float(table.valid_fraction[row]),
        "flag": str(table.flag[row]),
        "dimensions": EMBEDDING_DIM,
        "vector": _vector(table.means[row]),
        "links": [_item_link(request, table)],
    }


def _float(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def cosine_top_k(
    query: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the ``k`` rows of ``candidates`` most like ``query``.

    Computed in float64; ties broken by row order. Rows with a zero norm score -inf.
    """
    c = candidates.astype(np.float64)
    q = query.astype(np.float64)
    norms = np.linalg.norm(c, axis=1) * np.linalg.norm(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        sims = np.where(norms > 0, c @ q / norms, -np.inf)
    order = np.lexsort((np.arange(len(sims)), -sims))[:k]
    return order, sims[order]


@router.get(
    "/watersheds/{uid}/similar",
    summary="Micro-watersheds whose mean embeddings are most similar (cosine)",
    responses=RESPONSES,
)
async def mws_similar(
    at: Annotated[Target, Depends(target)],
    k: int = Query(10, ge=1, le=1000, description="How many to return"),
    scope: Literal["block", "all"] = Query(
        "block", description="Within the MWS's block, or across all loaded blocks"
    ),
) -> dict[str, Any]:
    """The ``k`` most similar MWS to ``uid`` by cosine similarity of mean vectors."""
    uid, year, tables, table, row = at.uid, at.year, at.tables, at.table, at.row
    query = table.means[row]
    if not np.isfinite(query).all():
        raise HTTPException(404, f"MWS {uid!r} has no valid pixel in {year}: no vector")
    pool = [table] if scope == "block" else tables
    ids: list[tuple[str, str]] = []
    vectors: list[np.ndarray] = []
    for t in pool:
        usable = np.isfinite(t.means).all(axis=1) & (t.count > 0)
        if t is table:
            usable[row] = False
        ids.extend((t.item_id, str(u)) for u in t.uids[usable])
        vectors.append(t.means[usable])
    if not ids:
        return {"uid": uid, "year": year, "scope": scope, "k": k, "results": []}
    order, sims = cosine_top_k(query, np.vstack(vectors), k)
    results = [
        {"uid": ids[i][1], "item": ids[i][0], "similarity": float(s)}
        for i, s in zip(order, sims, strict=True)
    ]
    return {
        "uid": uid,
        "item": table.item_id,
        "year": year,
        "scope": scope,
        "k": k,
        "results": results,
    }

"""pgSTAC and the STAC API at catalogue scale: 1 M synthetic items against 10 k.

What it measures (results in ``bench/results/scale_db.{json,md}``):

* load: items/s of a streamed load of N synthetic items (no NDJSON file on disk), the database
  and per-item size, the partitions made;
* ``/search`` latency through the API (uvicorn in its own process, on loopback), p50/p99 and
  requests/s at concurrency 1 and 16, for: a 0.5° x 0.5° block + a year; a CQL2 filter on
  ``proj:code`` + a year (no bbox: it must use the queryable's index, not scan the zone); a CQL2
  filter on one of our extension fields + block + year; and an item GET by id;
* the same queries against the 10 k catalogue, so growth with the catalogue is a ratio from one
  run; and the ``proj:code`` filter on 1 M items before the queryable had its index.

Both catalogues grow around the same centre, so the blocks queried hold the same items in both:
only the catalogue size differs.

Run: ``python -m bench bench_scale_db`` (env ``BENCH_SCALE_ITEMS`` = large size, default 1 M;
``BENCH_SCALE_SMALL`` default 10 k; ``BENCH_SCALE_REQUESTS`` per scenario at concurrency 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
COLLECTION = "tessera-embeddings-v1"
CENTRE = (78.95, 22.55)

# queryables registered with their real types (numbers compare as numbers) and a btree index
QUERYABLES: dict[str, dict[str, Any]] = {
    "proj:code": {"title": "Projection code (EPSG)", "type": "string"},
}


ORDERED_INDEX = "items_proj_code_dt_id_idx"
QUERIES_NOTE = (
    "bbox_year = POST /search, a 0.5° block + one year, limit 100 (~49 items); "
    "filter_proj_code = CQL2 proj:code = X + one year, limit 10 (no bbox); "
    "filter_ext_block = CQL2 s_intersects(block) and embedding:dimensions = 128 + one year; "
    "item_get = GET one item by id. Catalogues queried alternately, same requests for both."
)


def log(msg: str) -> None:
    """Progress on stderr with a timestamp (the 1 M load runs for minutes)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ database
def make_collection(spec: Any) -> dict[str, Any]:
    """The embedding collection document: the catalog's builder when it has one."""
    from tessera_stac.catalog import stac as builders
    from tessera_stac.publisher.samples.catalog import select_cells, synthetic_tiles

    lon, lat = select_cells(spec)
    bbox = [float(lon.min()) - 0.05, float(lat.min()) - 0.05]
    bbox += [float(lon.max()) + 0.05, float(lat.max()) + 0.05]
    create_collection = getattr(builders, "create_collection", None)
    if create_collection is not None:
        # one item per year is enough for the builder; the spatial extent is the catalogue's
        first = next(synthetic_tiles(replace(spec, n_items=1)))
        items = [builders.create_item(replace(first, year=y)) for y in spec.years]
        doc = create_collection(
            items, spec.model_version, spec.collection_id, link_items=False
        ).to_dict(include_self_link=False, transform_hrefs=False)
        doc["extent"]["spatial"]["bbox"] = [[round(v, 6) for v in bbox]]
        return dict(doc)
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": spec.collection_id,
        "description": "Synthetic TESSERA embeddings (scale benchmark)",
        "license": "CC-BY-4.0",
        "links": [],
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {
                "interval": [
                    [f"{min(spec.years)}-01-01T00:00:00Z", f"{max(spec.years)}-12-31T23:59:59Z"]
                ]
            },
        },
    }


def have_project_loader() -> bool:
    """True when the serving area's loader (``catalog.pgstac.load``) is on this branch."""
    import importlib.util

    return importlib.util.find_spec("tessera_stac.catalog.pgstac.load") is not None


def tune_database(dsn: str) -> None:
    """pgSTAC settings for a big catalogue: no counts (context off)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgstac.pgstac_settings (name, value) VALUES ('context', 'off') "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
        )


def setup_database(dsn: str, collection: dict[str, Any], index_queryables: bool = True) -> None:
    """Collection partitioned by year, queryables with real types (and btree indexes).

    Only for the direct pypgstac path: the project's loader does all of this itself.
    """
    import psycopg
    from psycopg.types.json import Jsonb

    tune_database(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")
        conn.execute("SELECT create_collection(%s)", (Jsonb(collection),))
        conn.execute(
            "UPDATE collections SET partition_trunc = 'year' WHERE id = %s", (collection["id"],)
        )
        register_queryables(conn, index=index_queryables)


def register_queryables(conn: Any, index: bool = True) -> None:
    """Register :data:`QUERYABLES` for every collection (with a btree index when ``index``)."""
    from psycopg.types.json import Jsonb

    for name, definition in QUERYABLES.items():
        conn.execute(
            "SELECT pgstac.upsert_queryable(%s, %s, NULL, %s, NULL, NULL)",
            (name, Jsonb(definition), "BTREE" if index else None),
        )


def load_items(dsn: str, lines: Iterator[str]) -> None:
    """Stream NDJSON lines into pgSTAC with pypgstac's Loader (fresh database: plain insert)."""
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    db = PgstacDB(dsn=dsn)
    try:
        Loader(db).load_items(lines, insert_mode=Methods.insert, chunksize=20_000)
    finally:
        db.close()


def load_catalogue(dsn: str, spec: Any, workdir: Path, label: str) -> dict[str, Any]:
    """Load ``spec``'s items: with ``tessera-stac load`` when on this branch, else pypgstac.

    Returns how: ``{"loader": ..., "seconds": ...}`` (NDJSON writing not included).
    """
    from tessera_stac.publisher.samples.catalog import iter_ndjson

    collection = make_collection(spec)
    lines = _progress_lines(iter_ndjson(spec), spec.n_items, label)
    if not have_project_loader():
        setup_database(dsn, collection)
        start = time.perf_counter()
        load_items(dsn, lines)
        return {"loader": "pypgstac Loader (insert)", "seconds": time.perf_counter() - start}
    from tessera_stac.catalog.pgstac.load import load

    path = workdir / f"{label}.ndjson"
    with open(path, "w") as fh:
        fh.write(json.dumps(collection) + "\n")
        fh.writelines(lines)
    tune_database(dsn)
    start = time.perf_counter()
    load(dsn, str(path), partition_trunc="year", batch_size=100_000)
    seconds = time.perf_counter() - start
    path.unlink()
    return {"loader": "tessera_stac.catalog.pgstac.load (upsert, 100k batches)", "seconds": seconds}


def database_stats(dsn: str) -> dict[str, Any]:
    """Item count, partitions, sizes (database, items with indexes) after ANALYZE."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")
        conn.execute("ANALYZE items")
        count = conn.execute("SELECT count(*) FROM items").fetchone()
        parts = conn.execute(
            "SELECT partition, constraint_dtrange::text FROM partitions_view "
            "WHERE partition LIKE '_items_%%' AND partition NOT IN "
            "(SELECT format('_items_%%s', key) FROM collections) ORDER BY partition"
        ).fetchall()
        db_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        items_size = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0), "
            "coalesce(sum(pg_indexes_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'pgstac' AND c.relname LIKE '_items_%%' AND c.relkind = 'r'"
        ).fetchone()
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'pgstac' "
            "AND tablename LIKE '_items_%%' AND indexdef ILIKE '%%proj:code%%'"
        ).fetchone()
    n = int(count[0]) if count else 0
    total = int(items_size[0]) if items_size else 0
    return {
        "items": n,
        "partitions": [p[0] for p in parts],
        "database_bytes": int(db_size[0]) if db_size else 0,
        "items_bytes": total,
        "items_index_bytes": int(items_size[1]) if items_size else 0,
        "bytes_per_item": round(total / n, 1) if n else None,
        "proj_code_indexes": int(indexes[0]) if indexes else 0,
    }


def set_proj_code_index(dsn: str, on: bool) -> float:
    """Give the ``proj:code`` queryable a btree index on every partition, or drop it.

    Returns the seconds it took (building the index on every partition when ``on``).
    """
    import psycopg
    from psycopg.types.json import Jsonb

    start = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")
        row = conn.execute(
            "SELECT definition FROM queryables WHERE name = 'proj:code' LIMIT 1"
        ).fetchone()
        definition = row[0] if row else QUERYABLES["proj:code"]
        conn.execute(
            "SELECT upsert_queryable('proj:code', %s, NULL, %s, NULL, NULL)",
            (Jsonb(definition), "BTREE" if on else None),
        )
        if not on:
            # pgSTAC drops indexes it does not know of: the ordered index goes first
            conn.execute(f"DROP INDEX IF EXISTS {ORDERED_INDEX}")
            conn.execute("SELECT maintain_partitions('items', true)")
        conn.execute("ANALYZE items")
    return time.perf_counter() - start


def add_ordered_index(dsn: str, prop: str = "proj:code") -> float:
    """A (property, datetime DESC, id DESC) btree on ``items`` (every partition, new ones too).

    pgSTAC's queryable index is on the property alone: an equality filter then fetches every
    matching row of the partition and sorts them for the page (cost grows with the catalogue).
    With the sort order in the index the first page is read straight off it. Returns seconds.
    """
    import psycopg

    expr = f"to_text(content->'properties'->'{prop}')"
    name = ORDERED_INDEX if prop == "proj:code" else f"items_{abs(hash(prop))}_dt_id_idx"
    start = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON items ({expr}, datetime DESC, id DESC)")
        conn.execute("ANALYZE items")
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------- API
def _serve(dsn: str, port: int, max_conn: int) -> None:  # pragma: no cover - child process
    import uvicorn

    from tessera_stac.api.app import create_app
    from tessera_stac.api.settings import ApiSettings

    app = create_app(ApiSettings(db_min_conn=1, db_max_conn=max_conn), dsn)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def serve_api(dsn: str, max_conn: int = 16) -> Iterator[str]:
    """Serve the API on loopback in its own process (so the client does not share its GIL)."""
    import httpx

    from tessera_stac.catalog.pgstac.cluster import free_port

    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(dsn, port, max_conn), daemon=True
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.join(10)


@dataclass(frozen=True)
class Query:
    """One request: method, path, JSON body."""

    method: str
    path: str
    body: dict[str, Any] | None = None


def _block(rng: random.Random) -> list[float]:
    """A 0.5° x 0.5° block on cell edges within 1° of the centre (inside both catalogues)."""
    west = round(CENTRE[0] - 1 + rng.randrange(0, 16) / 10, 1)
    south = round(CENTRE[1] - 1 + rng.randrange(0, 16) / 10, 1)
    return [west, south, round(west + 0.5, 1), round(south + 0.5, 1)]


def _year(rng: random.Random, years: tuple[int, ...]) -> str:
    y = rng.choice(years)
    return f"{y}-01-01T00:00:00Z/{y}-12-31T23:59:59Z"


def scenarios(years: tuple[int, ...], ext_filter: dict[str, Any] | None) -> dict[str, Any]:
    """Query makers by name: each takes an RNG and returns one :class:`Query`."""

    def bbox_year(rng: random.Random) -> Query:
        body = {"collections": [COLLECTION], "bbox": _block(rng), "datetime": _year(rng, years)}
        return Query("POST", "/search", {**body, "limit": 100})

    def filter_proj_code(rng: random.Random) -> Query:
        code = rng.choice(["EPSG:32643", "EPSG:32644"])
        flt = {"op": "=", "args": [{"property": "proj:code"}, code]}
        body = {"collections": [COLLECTION], "datetime": _year(rng, years), "limit": 10}
        return Query("POST", "/search", {**body, "filter-lang": "cql2-json", "filter": flt})

    def filter_ext_block(rng: random.Random) -> Query:
        w, s, e, n = _block(rng)
        poly = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
        args: list[Any] = [{"op": "s_intersects", "args": [{"property": "geometry"}, poly]}]
        if ext_filter:
            args.append(ext_filter)
        flt = {"op": "and", "args": args}
        body = {"collections": [COLLECTION], "datetime": _year(rng, years), "limit": 100}
        return Query("POST", "/search", {**body, "filter-lang": "cql2-json", "filter": flt})

    def item_get(rng: random.Random) -> Query:
        lon = round(CENTRE[0] - 1 + rng.randrange(0, 20) / 10, 2)  # CENTRE is a cell centre
        lat = round(CENTRE[1] - 1 + rng.randrange(0, 20) / 10, 2)
        item = f"grid_{lon:.2f}_{lat:.2f}_{rng.choice(years)}"
        return Query("GET", f"/collections/{COLLECTION}/items/{item}")

    return {
        "bbox_year": bbox_year,
        "filter_proj_code": filter_proj_code,
        "filter_ext_block": filter_ext_block,
        "item_get": item_get,
    }


async def _run(url: str, make: Callable[[random.Random], Query], n: int, conc: int) -> Any:
    import httpx

    rng = random.Random(1234)
    queries = [make(rng) for _ in range(n)]
    latencies: list[float] = []
    counts: list[int] = []
    sizes: list[int] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(conc)
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(q: Query) -> None:
            async with sem:
                start = time.perf_counter()
                resp = await client.request(q.method, q.path, json=q.body)
                latencies.append(time.perf_counter() - start)
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code} {q.path} {resp.text[:200]}")
                    return
                sizes.append(len(resp.content))
                doc = resp.json()
                counts.append(len(doc.get("features", [])) if "features" in doc else 1)

        # warm-up (pool connections, plans) outside the measurement
        for q in queries[: min(conc, 8)]:
            await one(q)
        latencies.clear()
        counts.clear()
        errors.clear()
        sizes.clear()
        start = time.perf_counter()
        await asyncio.gather(*(one(q) for q in queries))
        wall = time.perf_counter() - start
    return latencies, counts, sizes, errors, wall


def measure(url: str, make: Callable[[random.Random], Query], n: int, conc: int) -> dict[str, Any]:
    """p50/p99 (ms), requests/s and result sizes of ``n`` requests at concurrency ``conc``."""
    latencies, counts, sizes, errors, wall = asyncio.run(_run(url, make, n, conc))
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else float("nan")

    return {
        "requests": n,
        "concurrency": conc,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(lat), 2) if lat else None,
        "rps": round(n / wall, 1) if wall else None,
        "mean_features": round(statistics.fmean(counts), 2) if counts else 0,
        "mean_response_bytes": round(statistics.fmean(sizes)) if sizes else 0,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


# --------------------------------------------------------------------------------- run
def _progress_lines(lines: Iterator[str], total: int, label: str) -> Iterator[str]:
    start = time.perf_counter()
    for i, line in enumerate(lines, 1):
        if i % 50_000 == 0 or i == total:
            rate = i / (time.perf_counter() - start)
            log(f"{label}: {i}/{total} items read by the loader ({rate:.0f} items/s)")
        yield line


def prepare_catalogue(
    cluster: Any, label: str, n_items: int, args: argparse.Namespace, previous: dict[str, Any]
) -> dict[str, Any]:
    """Load one catalogue into database ``scale_{label}`` (skipped when it already holds it)."""
    from tessera_stac.publisher.samples.catalog import SyntheticSpec

    dbname = f"scale_{label.lower()}"
    cluster._ensure_database(dbname)
    dsn = cluster.dsn(dbname)
    cluster.migrate(dsn)
    spec = SyntheticSpec(n_items=n_items, centre=CENTRE, collection_id=COLLECTION)
    stats = database_stats(dsn)
    out: dict[str, Any] = {"items": n_items, "dsn": dsn, "years": spec.years, "queries": {}}
    if stats["items"] == n_items and previous.get("items") == n_items:
        log(f"{label}: already loaded ({n_items} items); load figures of the earlier run kept")
        out.update({k: previous[k] for k in ("loader", "load_seconds", "load_items_per_s")})
    else:
        log(f"{label}: loading {n_items} items")
        how = load_catalogue(dsn, spec, args.workdir, label)
        out["loader"] = how["loader"]
        out["load_seconds"] = round(how["seconds"], 2)
        out["load_items_per_s"] = round(n_items / how["seconds"], 1)
    out["db"] = database_stats(dsn)
    log(f"{label}: {out['db']}")
    return out


def probe_untuned(url: str, cat: dict[str, Any], args: argparse.Namespace) -> None:
    """The proj:code filter without any index, then with pgSTAC's queryable index only."""
    dsn = cat["dsn"]
    make = scenarios(cat["years"], args.ext_filter)["filter_proj_code"]
    n = max(20, args.requests // 5)
    set_proj_code_index(dsn, on=False)
    cat["db_without_proj_code_index"] = database_stats(dsn)
    cat["filter_proj_code_without_index"] = measure(url, make, n, 1)
    log(f"proj:code filter without index: {cat['filter_proj_code_without_index']}")
    cat["index_seconds"] = round(set_proj_code_index(dsn, on=True), 2)
    cat["filter_proj_code_queryable_index"] = measure(url, make, n, 1)
    log(f"proj:code filter, queryable index: {cat['filter_proj_code_queryable_index']}")


def measure_interleaved(cats: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """Every query on every catalogue, alternating catalogues, so load from other jobs on the
    machine hits both alike."""
    with contextlib.ExitStack() as stack:
        urls = {label: stack.enter_context(serve_api(c["dsn"])) for label, c in cats.items()}
        if "large" in cats:
            probe_untuned(urls["large"], cats["large"], args)
        for cat in cats.values():
            cat["ordered_index_seconds"] = round(add_ordered_index(cat["dsn"]), 2)
            cat["db"] = database_stats(cat["dsn"])
        first = next(iter(cats.values()))
        for name, make in scenarios(first["years"], args.ext_filter).items():
            for conc in (1, 16):
                n = args.requests if conc == 1 else args.requests * 2
                for label, cat in cats.items():
                    result = measure(urls[label], make, n, conc)
                    cat["queries"][f"{name}@c{conc}"] = result
                    log(f"{label}: {name} c={conc}: {result}")


def write_results(results: dict[str, Any]) -> None:
    """bench/results/scale_db.json and a short markdown table."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale_db.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    small, large = results.get("small"), results.get("large")
    lines = [
        "# pgSTAC + STAC API at catalogue scale",
        "",
        f"Measured {results['when']} on {results['machine']}. {results['note']}",
        "",
    ]
    for label, r in (("small", small), ("large", large)):
        if not r:
            continue
        db = r["db"]
        lines.append(
            f"- {label}: {r['items']} items loaded in {r['load_seconds']} s "
            f"({r['load_items_per_s']} items/s); database {db['database_bytes'] / 2**20:.0f} MiB, "
            f"items+indexes {db['items_bytes'] / 2**20:.0f} MiB ({db['bytes_per_item']} B/item), "
            f"{len(db['partitions'])} partitions"
        )
    if large and "filter_proj_code_without_index" in large:
        p = large["filter_proj_code_without_index"]
        q = large["filter_proj_code_queryable_index"]
        lines.append(
            f"- proj:code filter + year at {large['items']} items, concurrency 1: no index "
            f"p50 {p['p50_ms']} ms; pgSTAC queryable btree (built in {large['index_seconds']} s) "
            f"p50 {q['p50_ms']} ms; + (proj:code, datetime, id) index (built in "
            f"{large['ordered_index_seconds']} s): see filter_proj_code@c1 below"
        )
    lines += [
        "",
        f"Queries: {results.get('queries_note', QUERIES_NOTE)}",
        "",
        "| query @ concurrency | 10 k p50 / p99 ms | 1 M p50 / p99 ms | 1 M / 10 k p50 "
        "| req/s 10 k / 1 M | kB per response |",
        "|---|---|---|---|---|---|",
    ]
    for key in (large or small or {}).get("queries", {}):
        s = (small or {}).get("queries", {}).get(key)
        g = (large or {}).get("queries", {}).get(key)
        ratio = round(g["p50_ms"] / s["p50_ms"], 2) if s and g and s["p50_ms"] else ""
        cell_s = f"{s['p50_ms']} / {s['p99_ms']}" if s else ""
        cell_g = f"{g['p50_ms']} / {g['p99_ms']}" if g else ""
        rps = f"{s['rps'] if s else ''} / {g['rps'] if g else ''}"
        size = round((g or s or {}).get("mean_response_bytes", 0) / 1000, 1)
        lines.append(f"| {key} | {cell_s} | {cell_g} | {ratio} | {rps} | {size} |")
    (RESULTS / "scale_db.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (sizes from arguments or ``BENCH_SCALE_*``)."""
    import shutil

    from tessera_stac.catalog.pgstac.cluster import LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    env = os.environ.get
    parser.add_argument("--items", type=int, default=int(env("BENCH_SCALE_ITEMS", 10**6)))
    parser.add_argument("--small", type=int, default=int(env("BENCH_SCALE_SMALL", 10**4)))
    parser.add_argument("--requests", type=int, default=int(env("BENCH_SCALE_REQUESTS", 100)))
    parser.add_argument("--note", default=env("BENCH_SCALE_NOTE", ""))
    parser.add_argument(
        "--home",
        type=Path,
        default=env("BENCH_SCALE_HOME"),
        help="Cluster directory to use and keep (catalogues already loaded there are reused).",
    )
    args = parser.parse_args(argv if argv is not None else [])
    args.ext_filter = extension_filter()
    home = args.home or Path(tempfile.mkdtemp(prefix="tessera-stac-scale-db-"))
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    args.workdir = home
    cluster = LocalCluster(home, dbname="postgres", fast=True)
    previous: dict[str, Any] = {}
    if (RESULTS / "scale_db.json").is_file():
        previous = json.loads((RESULTS / "scale_db.json").read_text())
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "note": args.note or "Shared machine (other jobs running): figures under contention.",
        "ext_filter": args.ext_filter,
        "settings": {"context": "off", "partition_trunc": "year", "api_pool_max": 16},
    }
    try:
        cluster.init()
        results["postgres"] = pg_settings(cluster.dsn("postgres"))
        cats = {
            "small": prepare_catalogue(
                cluster, "small", args.small, args, previous.get("small", {})
            ),
            "large": prepare_catalogue(
                cluster, "large", args.items, args, previous.get("large", {})
            ),
        }
        measure_interleaved(cats, args)
        for label, cat in cats.items():
            results[label] = {k: v for k, v in cat.items() if k not in ("dsn", "years")}
        write_results(results)
    finally:
        cluster.stop()
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    log(f"results in {RESULTS / 'scale_db.json'}")


def pg_settings(dsn: str) -> dict[str, str]:
    """The server settings that matter for these figures."""
    import psycopg

    names = ("shared_buffers", "work_mem", "effective_cache_size", "max_connections", "jit")
    with psycopg.connect(dsn) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def extension_filter() -> dict[str, Any] | None:
    """A CQL2 clause on one of our extension's fields, when the item builder writes one."""
    from tessera_stac.publisher.samples.catalog import SyntheticSpec, iter_ndjson

    item = json.loads(next(iter_ndjson(replace(SyntheticSpec(n_items=1)))))
    for key, value in sorted(item["properties"].items()):
        prefix = key.split(":", 1)[0]
        if ":" in key and prefix not in ("proj", "processing", "file") and isinstance(value, int):
            return {"op": "=", "args": [{"property": key}, value]}
    return None


if __name__ == "__main__":
    main(sys.argv[1:])

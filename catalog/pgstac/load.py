"""Load STAC collections and items into pgSTAC with ``pypgstac.load.Loader``.

A source is a static catalog (``catalog.json``/``collection.json`` path, a folder holding one, or
an http(s) URL), or newline-delimited JSON of collections and items. Collections are loaded
first, partitioned by year, then items stream through pypgstac's ``Loader`` (COPY into a temp
table, ``INSERT ... ON CONFLICT``): upsert by default, delsert or insert-ignore on request.

All-or-nothing: the whole load runs in one transaction (pypgstac's own transactions nest as
savepoints inside it), so a bad item or a database failure leaves the database as it was. With
``batch_size`` each batch of items commits on its own instead (each batch all-or-nothing).

Watershed features: the MWS layers, joins and change tables among the loaded items are written
to the feature tables beside pgSTAC (``catalog.pgstac.watersheds``) in the same transaction as
their items (each item replaces its own rows).

Queryables: after the items, the fields people filter on are registered in ``pgstac.queryables``
with their JSON types (so ``embedding:dimensions > 64`` compares numbers, not text). The list is
:data:`QUERYABLES` plus every scalar ``embedding:*`` property the loaded items carry.
"""

from __future__ import annotations

import enum
import json
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from tessera_stac.catalog import embedding as emb
from tessera_stac.catalog.errors import DatabaseError, InputError
from tessera_stac.catalog.hrefs import is_url, resolve_href
from tessera_stac.catalog.pgstac.watersheds import (
    DATA_ASSET,
    WatershedItem,
    feature_table_of,
    load_feature_tables,
)

#: Fields registered as queryables when loaded items carry them: name -> JSON-schema definition.
#: (``id``, ``geometry``, ``datetime``, ``collection`` are pgSTAC's own; the grid cell of an
#: embedding item is its id prefix, ``grid_X_Y_{year}``: filter it with ``id LIKE``.)
QUERYABLES: dict[str, dict[str, Any]] = {
    "proj:code": {"title": "Projection code (EPSG:xxxx) of the native grid", "type": "string"},
    "grid:code": {"title": "Grid cell code", "type": "string"},
    "tessera:grid": {"title": "TESSERA 0.1° grid cell name (grid_X_Y)", "type": "string"},
    "start_datetime": {"title": "Start of the period", "type": "string", "format": "date-time"},
    "end_datetime": {"title": "End of the period", "type": "string", "format": "date-time"},
    "processing:level": {"title": "Processing level", "type": "string"},
    "version": {"title": "Model version of the data", "type": "string"},
    "instruments": {
        "title": "Instruments the source data came from",
        "type": "array",
        "items": {"type": "string"},
    },
    emb.TYPE_PROP: {"title": "Embedding type", "type": "string", "enum": ["pixel", "chip"]},
    emb.DIMENSIONS_PROP: {"title": "Embedding dimensions", "type": "integer"},
    emb.CHIP_SIZE_PROP: {"title": "Chip size (pixels)", "type": "integer"},
    emb.MODEL_NAME_PROP: {"title": "Model name", "type": "string"},
    emb.MODEL_VERSION_PROP: {"title": "Model version", "type": "string"},
    emb.SIMILARITY_PROP: {"title": "Similarity metric", "type": "string"},
    emb.NORMALIZED_PROP: {"title": "Vectors are L2-normalised", "type": "boolean"},
}
#: Every scalar property with one of these prefixes is registered too, typed from its values.
QUERYABLE_PREFIXES: tuple[str, ...] = (emb.PREFIX,)
#: Queryables that get a B-tree index on every partition (exact-match filters).
INDEXED_QUERYABLES: frozenset[str] = frozenset({"proj:code", "grid:code", "tessera:grid"})

#: Link relations the API regenerates; stored copies from a static catalog would be stale.
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection", "child", "item", "items"})


class LoadMethod(enum.StrEnum):
    """How items already in the database are treated."""

    upsert = "upsert"
    delsert = "delsert"
    insert_ignore = "insert_ignore"


@dataclass(frozen=True)
class Origin:
    """Where a STAC object came from: the file (or URL) and, for NDJSON, the line."""

    href: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.href}:{self.line}" if self.line is not None else self.href


@dataclass
class LoadReport:
    """What a load did."""

    collections: list[str] = field(default_factory=list)
    items: int = 0
    batches: int = 0
    queryables: list[str] = field(default_factory=list)
    #: rows written to the watershed feature tables (``catalog.pgstac.watersheds``)
    features: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------ reading
def read_json_href(href: str) -> Any:
    """Read a JSON document from a local path or an http(s) URL.

    Raises:
        InputError: naming the file when it cannot be read or parsed.
    """
    import httpx

    try:
        if is_url(href):
            response = httpx.get(href, timeout=30, follow_redirects=True)
            response.raise_for_status()
            data = response.content
        else:
            data = Path(href).read_bytes()
    except (OSError, httpx.HTTPError) as exc:
        raise InputError(f"{href}: cannot read: {exc}") from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{href}: not valid JSON: {exc}") from exc


class HrefRewriter:
    """Make hrefs absolute; optionally map those under the catalog root to a public URL.

    Args:
        root: the directory (or URL prefix) of the static catalog, or None.
        base_url: public URL the root is served at (e.g. ``http://host/data``), or None.
    """

    def __init__(self, root: str | None, base_url: str | None) -> None:
        self.root = root.rstrip("/") + "/" if root else None
        self.base_url = base_url.rstrip("/") + "/" if base_url else None

    def __call__(self, doc_href: str, href: str) -> str:
        absolute = resolve_href(href, doc_href)
        if self.root and self.base_url and absolute.startswith(self.root):
            return self.base_url + absolute[len(self.root) :]
        return absolute

    def source(self, href: str) -> str:
        """Where a rewritten href can be read by the loader (the inverse of the public URL)."""
        if self.root and self.base_url and href.startswith(self.base_url):
            return self.root + href[len(self.base_url) :]
        return href


# --------------------------------------------------------------------------- validation
def _check_datetime(value: Any, key: str, origin: Origin) -> None:
    if not isinstance(value, str):
        raise InputError(f"{origin}: properties.{key} must be an RFC 3339 string, got {value!r}")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{origin}: properties.{key} is not RFC 3339: {value!r}") from None


def check_item(item: Any, origin: Origin) -> None:
    """Reject what pgSTAC would refuse or store badly, naming the file.

    Raises:
        InputError: when the item lacks an id, a geometry, a datetime or a collection.
    """
    if not isinstance(item, dict) or item.get("type") != "Feature":
        raise InputError(f"{origin}: not a STAC Item (type must be 'Feature')")
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise InputError(f"{origin}: item has no string 'id'")
    where = f"{origin} (item {item['id']!r})"
    geometry = item.get("geometry")
    if geometry is not None and (
        not isinstance(geometry, dict)
        or not isinstance(geometry.get("type"), str)
        or ("coordinates" not in geometry and "geometries" not in geometry)
    ):
        raise InputError(f"{where}: geometry is not GeoJSON")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise InputError(f"{where}: 'properties' must be an object")
    if props.get("datetime") is None and (
        props.get("start_datetime") is None or props.get("end_datetime") is None
    ):
        raise InputError(f"{where}: needs datetime or start_datetime + end_datetime")
    for key in ("datetime", "start_datetime", "end_datetime"):
        if props.get(key) is not None:
            _check_datetime(props[key], key, Origin(where))
    if not isinstance(item.get("collection"), str) or not item["collection"]:
        raise InputError(f"{where}: item has no 'collection' (and no parent collection)")


def check_collection(collection: Any, origin: Origin) -> None:
    """Reject a collection without an id or extent, naming the file."""
    if not isinstance(collection, dict) or collection.get("type") != "Collection":
        raise InputError(f"{origin}: not a STAC Collection (type must be 'Collection')")
    if not isinstance(collection.get("id"), str) or not collection["id"]:
        raise InputError(f"{origin}: collection has no string 'id'")
    if not isinstance(collection.get("extent"), dict):
        raise InputError(f"{origin} (collection {collection['id']!r}): no 'extent'")


def _clean_links(obj: dict[str, Any], doc_href: str, rewrite: HrefRewriter) -> None:
    links = []
    for link in obj.get("links") or []:
        if not isinstance(link, dict) or link.get("rel") in STRUCTURAL_RELS:
            continue
        if isinstance(link.get("href"), str):
            link = {**link, "href": rewrite(doc_href, link["href"])}
        links.append(link)
    obj["links"] = links


def prepare_item(
    item: dict[str, Any], origin: Origin, collection: str | None, rewrite: HrefRewriter
) -> dict[str, Any]:
    """Set the collection, make asset/link hrefs absolute (or public), then check the item."""
    if collection and not item.get("collection"):
        item["collection"] = collection
    if origin.line is None:
        for asset in (item.get("assets") or {}).values():
            if isinstance(asset, dict) and isinstance(asset.get("href"), str):
                asset["href"] = rewrite(origin.href, asset["href"])
        _clean_links(item, origin.href, rewrite)
    check_item(item, origin)
    return item


# ------------------------------------------------------------------------------ sources
@dataclass
class Source:
    """A parsed source: its collections (loaded first) and a factory of its items."""

    collections: list[tuple[dict[str, Any], Origin]]
    items: Callable[[], Iterator[tuple[dict[str, Any], Origin]]]
    count_hint: int | None = None
    rewrite: HrefRewriter | None = None


def _walk_catalog(
    href: str, rewrite: HrefRewriter
) -> tuple[list[tuple[dict[str, Any], Origin]], list[tuple[str, str | None]]]:
    """Collections of a static catalog and its item hrefs (with their collection ids)."""
    collections: list[tuple[dict[str, Any], Origin]] = []
    items: list[tuple[str, str | None]] = []
    stack: list[tuple[str, str | None]] = [(href, None)]
    seen: set[str] = set()
    while stack:
        doc_href, parent_collection = stack.pop()
        if doc_href in seen:
            continue
        seen.add(doc_href)
        doc = read_json_href(doc_href)
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind == "Feature":
            items.append((doc_href, parent_collection))
            continue
        if kind not in ("Catalog", "Collection"):
            raise InputError(f"{doc_href}: not a STAC Catalog, Collection or Item")
        current = parent_collection
        if kind == "Collection":
            check_collection(doc, Origin(doc_href))
            current = doc["id"]
            coll = dict(doc)
            for asset in (coll.get("assets") or {}).values():
                if isinstance(asset, dict) and isinstance(asset.get("href"), str):
                    asset["href"] = rewrite(doc_href, asset["href"])
            _clean_links(coll, doc_href, rewrite)
            collections.append((coll, Origin(doc_href)))
        for link in reversed(doc.get("links") or []):
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                continue
            if link.get("rel") == "child":
                stack.append((resolve_href(link["href"], doc_href), current))
            elif link.get("rel") == "item":
                items.append((resolve_href(link["href"], doc_href), current))
    return collections, items


def _catalog_source(href: str, base_url: str | None) -> Source:
    root = posixpath.dirname(href) if is_url(href) else str(Path(href).parent)
    rewrite = HrefRewriter(root, base_url)
    collections, item_refs = _walk_catalog(href, rewrite)

    def items() -> Iterator[tuple[dict[str, Any], Origin]]:
        for item_href, collection in item_refs:
            origin = Origin(item_href)
            yield prepare_item(read_json_href(item_href), origin, collection, rewrite), origin

    return Source(collections, items, len(item_refs), rewrite)


def _ndjson_source(path: Path, base_url: str | None) -> Source:
    rewrite = HrefRewriter(None, base_url)
    href = str(path)
    collections: list[tuple[dict[str, Any], Origin]] = []
    lines = 0
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            lines += 1
            if b"Collection" not in line:
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{href}:{number}: not valid JSON: {exc}") from exc
            if isinstance(obj, dict) and obj.get("type") == "Collection":
                check_collection(obj, Origin(href, number))
                collections.append((obj, Origin(href, number)))

    def items() -> Iterator[tuple[dict[str, Any], Origin]]:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                origin = Origin(href, number)
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise InputError(f"{origin}: not valid JSON: {exc}") from exc
                if isinstance(obj, dict) and obj.get("type") == "Collection":
                    continue
                yield prepare_item(obj, origin, None, rewrite), origin

    return Source(collections, items, lines - len(collections), rewrite)


def open_source(source: str, base_url: str | None = None) -> Source:
    """Recognise ``source`` (catalog path/folder/URL, NDJSON, single JSON) and parse its tree.

    Args:
        source: a ``catalog.json``/``collection.json`` path or URL, a folder holding one, an
            ``.ndjson``/``.jsonl`` file, or a JSON Item/FeatureCollection.
        base_url: public URL the catalog's folder is served at; asset hrefs inside the folder
            are rewritten to it (for a local deployment serving files under ``/data``).

    Raises:
        InputError: when the source is missing or not STAC.
    """
    if is_url(source):
        return _catalog_source(source, base_url)
    path = Path(source).absolute()
    if path.is_dir():
        for name in ("catalog.json", "collection.json"):
            if (path / name).is_file():
                return _catalog_source(str(path / name), base_url)
        raise InputError(f"{path}: folder holds no catalog.json or collection.json")
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".ndjson", ".jsonl", ".geojsonl"):
        return _ndjson_source(path, base_url)
    doc = read_json_href(str(path))
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind in ("Catalog", "Collection"):
        return _catalog_source(str(path), base_url)
    if kind in ("Feature", "FeatureCollection"):
        rewrite = HrefRewriter(str(path.parent), base_url)
        features = doc.get("features", []) if kind == "FeatureCollection" else [doc]

        def items() -> Iterator[tuple[dict[str, Any], Origin]]:
            for feature in features:
                origin = Origin(str(path))
                yield prepare_item(feature, origin, None, rewrite), origin

        return Source([], items, len(features), rewrite)
    raise InputError(f"{path}: not STAC (expected a Catalog, Collection, Item or NDJSON)")


# ------------------------------------------------------------------------------ loading
def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "array"
    return None


class _QueryableCollector:
    """Watch loaded items for the properties that become queryables, and their types."""

    def __init__(self) -> None:
        self.types: dict[str, set[str]] = {}

    def see(self, item: dict[str, Any]) -> None:
        for key, value in item["properties"].items():
            if key in QUERYABLES or key.startswith(QUERYABLE_PREFIXES):
                kind = _json_type(value)
                if kind:
                    self.types.setdefault(key, set()).add(kind)

    def definitions(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, kinds in sorted(self.types.items()):
            if key in QUERYABLES:
                out[key] = QUERYABLES[key]
            elif kinds == {"array"}:
                out[key] = {"title": key, "type": "array", "items": {"type": "string"}}
            elif len(kinds) == 1:
                out[key] = {"title": key, "type": next(iter(kinds))}
            elif kinds <= {"integer", "number"}:
                out[key] = {"title": key, "type": "number"}
        return out


def register_queryables(conn: Any, definitions: dict[str, dict[str, Any]]) -> list[str]:
    """Upsert global queryables whose stored definition differs; return the names changed."""
    existing = {
        name: (definition, index)
        for name, definition, index in conn.execute(
            "SELECT name, definition, property_index_type FROM pgstac.queryables "
            "WHERE collection_ids IS NULL"
        ).fetchall()
    }
    changed = []
    for name, definition in definitions.items():
        index = "BTREE" if name in INDEXED_QUERYABLES else None
        if existing.get(name) == (definition, index):
            continue
        conn.execute(
            "SELECT pgstac.upsert_queryable(%s, %s::jsonb, NULL, %s, NULL, NULL)",
            (name, json.dumps(definition), index),
        )
        changed.append(name)
    return changed


def _collection_ids(conn: Any) -> set[str]:
    return {row[0] for row in conn.execute("SELECT id FROM pgstac.collections").fetchall()}


class _Tracker:
    """Follow the item being handed to pypgstac, to name its file when pypgstac fails."""

    def __init__(
        self,
        source: Iterator[tuple[dict[str, Any], Origin]],
        known: set[str],
        collector: _QueryableCollector,
        on_item: Callable[[int], None] | None,
        rewrite: HrefRewriter | None = None,
    ) -> None:
        self.source = source
        self.rewrite = rewrite
        self.watersheds: list[WatershedItem] = []
        self.known = known
        self.collector = collector
        self.on_item = on_item
        self.current: Origin | None = None
        self.count = 0
        self.exhausted = False

    def take(self, limit: int | None) -> Iterator[dict[str, Any]]:
        taken = 0
        while limit is None or taken < limit:
            try:
                item, origin = next(self.source)
            except StopIteration:
                self.exhausted = True
                return
            self.current = origin
            if item["collection"] not in self.known:
                raise InputError(
                    f"{origin} (item {item['id']!r}): collection {item['collection']!r} is "
                    f"neither in the source nor in the database"
                )
            self.collector.see(item)
            self._see_watershed(item)
            taken += 1
            self.count += 1
            if self.on_item:
                self.on_item(1)
            yield item

    def _see_watershed(self, item: dict[str, Any]) -> None:
        table = feature_table_of(item)
        if table is None:
            return
        href = str(item["assets"][DATA_ASSET]["href"])
        source = self.rewrite.source(href) if self.rewrite else href
        self.watersheds.append(WatershedItem(table, item, source))

    def flush_watersheds(self, conn: Any, report: LoadReport) -> None:
        """Write the feature rows of the watershed items taken since the last flush."""
        done = load_feature_tables(conn, self.watersheds)
        self.watersheds = []
        for table, count in done.rows.items():
            report.features[table] = report.features.get(table, 0) + count


def load(
    dsn: str,
    source: str,
    method: LoadMethod = LoadMethod.upsert,
    base_url: str | None = None,
    partition_trunc: str | None = "year",
    batch_size: int | None = None,
    on_item: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> LoadReport:
    """Load ``source`` into the pgSTAC database at ``dsn``.

    Args:
        dsn: libpq URL of a pgSTAC database.
        source: see :func:`open_source`.
        method: upsert (default), delsert or insert_ignore.
        base_url: public URL of the catalog's folder (asset hrefs under it are rewritten).
        partition_trunc: ``year``, ``month`` or None: how the collections' items are split.
        batch_size: commit every ``batch_size`` items (each batch all-or-nothing); None loads
            everything in one transaction.
        on_item: called with 1 per item handed to the database (progress).
        on_total: called once with the number of items expected (None when unknown).

    Returns:
        What was loaded.

    Raises:
        InputError: bad input (names the file); nothing of the failing batch is written.
        DatabaseError: the database is unreachable or refused the load.
    """
    import psycopg
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    parsed = open_source(source, base_url)
    if on_total:
        on_total(parsed.count_hint)
    report = LoadReport(collections=[c["id"] for c, _ in parsed.collections])
    collector = _QueryableCollector()
    db = PgstacDB(dsn=dsn)
    try:
        try:
            conn = db.connect()
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to the database: {exc}") from exc
        loader = Loader(db=db)
        tracker = _Tracker(parsed.items(), set(), collector, on_item, parsed.rewrite)
        try:
            with conn.transaction():
                _load_collections(conn, loader, parsed, method, partition_trunc)
                tracker.known = _collection_ids(conn)
                if batch_size is None:
                    _load_batch(loader, tracker, None, method, Methods)
                    tracker.flush_watersheds(conn, report)
                    report.batches = 1
                    report.queryables = register_queryables(conn, collector.definitions())
            while batch_size is not None and not tracker.exhausted:
                before = tracker.count
                with conn.transaction():
                    _load_batch(loader, tracker, batch_size, method, Methods)
                    tracker.flush_watersheds(conn, report)
                    report.queryables += register_queryables(conn, collector.definitions())
                report.batches += int(tracker.count > before)
        except (InputError, DatabaseError):
            raise
        except psycopg.OperationalError as exc:
            raise DatabaseError(
                f"database connection failed during the load (batch {report.batches + 1} rolled "
                f"back): {exc}"
            ) from exc
        except Exception as exc:  # pypgstac raises plain exceptions for bad items
            where = f"{tracker.current}: " if tracker.current else ""
            raise InputError(
                f"{where}load failed, batch {report.batches + 1} rolled back: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        report.items = tracker.count
    finally:
        db.close()
    return report


def _load_collections(
    conn: Any, loader: Any, parsed: Source, method: LoadMethod, partition_trunc: str | None
) -> None:
    from pypgstac.load import Methods

    if not parsed.collections:
        return
    ids = [c["id"] for c, _ in parsed.collections]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        origins = [str(o) for c, o in parsed.collections if c["id"] in duplicates]
        raise InputError(
            f"collection id(s) {duplicates} appear more than once: {', '.join(origins)}"
        )
    mode = Methods.insert_ignore if method == LoadMethod.insert_ignore else Methods.upsert
    loader.load_collections(iter([c for c, _ in parsed.collections]), mode)
    conn.execute(
        "UPDATE pgstac.collections SET partition_trunc = %s "
        "WHERE id = ANY(%s) AND partition_trunc IS DISTINCT FROM %s",
        (partition_trunc, ids, partition_trunc),
    )
    loader.collection_json.cache_clear()


def _load_batch(
    loader: Any, tracker: _Tracker, limit: int | None, method: LoadMethod, methods: Any
) -> None:
    loader.load_items(tracker.take(limit), methods(method.value), chunksize=5000)

"""Build the static STAC catalog around the Item JSONs a publisher run wrote.

Layout (DESIGN §2), the same keys in a local directory or an S3 prefix::

    catalog.json
    {collection}/collection.json
    {collection}/items.parquet                       stac-geoparquet index of the Items
    {collection}/{year}/{grid}/{grid}_{year}.json    written by the publisher
    tessera-models/collection.json
    tessera-models/tessera-{version}/tessera-{version}.json   the MLM model Item
    corestack-*/{item}/{item}.json                   watershed layers, joins, CoRE Stack imports

This module is the one static-catalog writer: :func:`build_static_catalog` for the embedding
collections, :func:`put_collection` for the others, and :func:`write_root`, which every
command calls last so ``catalog.json`` always lists every collection present.

Hrefs are relative by default (a catalog that can be moved or mirrored as a whole), or
absolute under ``href_base`` (then every object also gets a ``self`` link). Every object is
written atomically by the store, Items first and ``catalog.json`` last, so a reader never sees
a root that points at missing objects; a bad Item is reported and left out, never spoiling
the others.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pystac

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.embedding import MODEL_VERSION_PROP
from tessera_stac.catalog.hrefs import resolve_href
from tessera_stac.catalog.stac import (
    CATALOG_KEY,
    JSON_MEDIA_TYPE,
    collection_key,
    create_collection,
    create_model_collection,
    create_model_item,
    create_root_catalog,
    model_item_key,
    relative_href,
)
from tessera_stac.catalog.store import Store

ITEM_KEY_RE = re.compile(
    r"^(?P<collection>[^/]+)/(?P<year>\d{4})/(?P<grid>[^/]+)/(?P<name>[^/]+)\.json$"
)
PARQUET_NAME = "items.parquet"
PARQUET_MEDIA_TYPE = c.PARQUET_MEDIA_TYPE
GEOJSON_MEDIA_TYPE = c.GEOJSON_MEDIA_TYPE


@dataclass(frozen=True)
class Problem:
    """An object that was left out, and why."""

    key: str
    message: str


@dataclass
class BuildReport:
    """What ``build_static_catalog`` did."""

    collections: dict[str, int] = field(default_factory=dict)  # id -> number of Items
    written: list[str] = field(default_factory=list)
    items_rewritten: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was left out."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "collections": self.collections,
            "written": len(self.written),
            "items_rewritten": self.items_rewritten,
            "problems": [{"key": p.key, "message": p.message} for p in self.problems],
        }


def find_item_keys(keys: Iterator[str] | list[str]) -> list[str]:
    """Keys that sit where the layout puts Items (models and indexes excluded)."""
    return sorted(
        k for k in keys if ITEM_KEY_RE.match(k) and not k.startswith(f"{c.MODEL_COLLECTION_ID}/")
    )


def _absolute(href: str, key: str, href_base: str) -> str:
    return resolve_href(href, f"{href_base.rstrip('/')}/{key}")


def publish_hrefs(obj: dict[str, Any], key: str, href_base: str | None) -> dict[str, Any]:
    """A copy of a STAC dict with hrefs for its place: relative (no ``self``) or absolute.

    Args:
        obj: the STAC object as a dict, with relative hrefs in the static layout.
        key: the object's key in the store.
        href_base: the public URL of the store's root, or None for relative hrefs.
    """
    out = json.loads(json.dumps(obj))
    links = [link for link in out.get("links", []) if link.get("rel") != "self"]
    if href_base:
        for link in links:
            link["href"] = _absolute(link["href"], key, href_base)
        for asset in out.get("assets", {}).values():
            asset["href"] = _absolute(asset["href"], key, href_base)
        media = GEOJSON_MEDIA_TYPE if out.get("type") == "Feature" else JSON_MEDIA_TYPE
        links.insert(0, {"rel": "self", "href": _absolute(key, "", href_base), "type": media})
    out["links"] = links
    return out


def item_links(d: dict[str, Any], key: str, collection_id: str) -> dict[str, Any]:
    """The Item with root/parent/collection links for its key (other links kept, no self)."""
    coll = relative_href(key, collection_key(collection_id))
    fixed = [
        {"rel": "root", "href": relative_href(key, CATALOG_KEY), "type": JSON_MEDIA_TYPE},
        {"rel": "parent", "href": coll, "type": JSON_MEDIA_TYPE},
        {"rel": "collection", "href": coll, "type": JSON_MEDIA_TYPE},
    ]
    rest = [x for x in d.get("links", []) if x.get("rel") not in ("root", "parent", "collection")]
    return {**d, "collection": collection_id, "links": fixed + rest}


def dump_json(obj: dict[str, Any]) -> bytes:
    """How every STAC document is written: indented UTF-8 JSON with a final newline.

    orjson writes it (the standard library's encoder falls back to pure Python when it
    indents: most of ``corestack import``'s time went to writing the items' large geometries);
    a value orjson refuses (an integer past 64 bits) goes through the standard library."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


@dataclass
class _Loaded:
    key: str
    original: dict[str, Any]
    relative: dict[str, Any]
    item: pystac.Item


def _load_item(store: Store, key: str) -> _Loaded:
    """Read and check one Item JSON; raises ValueError naming the problem."""
    match = ITEM_KEY_RE.match(key)
    assert match is not None
    try:
        data = store.read_bytes(key)
        raw = json.loads(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not readable JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        raise ValueError("not a STAC Item (type is not 'Feature')")
    if raw.get("id") != match["name"]:
        raise ValueError(f"item id {raw.get('id')!r} does not match its file name")
    cid = match["collection"]
    if raw.get("collection") not in (None, cid):
        raise ValueError(f"item says collection {raw.get('collection')!r}, folder says {cid!r}")
    relative = item_links(publish_hrefs(raw, key, None), key, cid)
    try:
        # parsing twice is ~10x cheaper than pystac's deepcopy (preserve_dict) of 128 bands;
        # the pystac Item only feeds extents and summaries, so its links do not matter
        item = pystac.Item.from_dict(
            json.loads(data), preserve_dict=False, migrate=raw.get("stac_version") != c.STAC_VERSION
        )
    except Exception as exc:  # pystac raises assorted errors on malformed items
        raise ValueError(f"pystac cannot parse it: {exc}") from None
    return _Loaded(key, raw, relative, item)


def build_static_catalog(
    store: Store,
    href_base: str | None = None,
    geoparquet: bool = True,
    progress: Callable[[int], None] | None = None,
    item_links: bool = True,
) -> BuildReport:
    """Write Collections, the model Collection/Item, ``catalog.json`` and the parquet indexes.

    Args:
        store: the published tree (local directory or S3 prefix).
        href_base: public URL of the store's root for absolute hrefs; None for relative ones.
        geoparquet: also write ``{collection}/items.parquet``.
        progress: called with the number of Items handled since the last call.
        item_links: list every Item in its Collection (``item`` links). Turn off for very
            large collections: the geoparquet index and an API then do the listing.

    Returns:
        A :class:`BuildReport`; Items that could not be read are listed in ``problems``.
    """
    report = BuildReport()
    by_collection: dict[str, list[_Loaded]] = defaultdict(list)
    for key in find_item_keys(store.list("")):
        try:
            loaded = _load_item(store, key)
        except ValueError as exc:
            report.problems.append(Problem(key, str(exc)))
        else:
            by_collection[loaded.relative["collection"]].append(loaded)
        if progress:
            progress(1)
    if not by_collection and not report.problems:
        return report  # nothing published here: write nothing
    versions: set[str] = set()
    years: set[int] = set()
    for cid, loaded_items in sorted(by_collection.items()):
        done = _write_collection(
            store, cid, loaded_items, href_base, (geoparquet, item_links), report
        )
        if done:
            versions.add(done)
            years.update(i.item.datetime.year for i in loaded_items if i.item.datetime)
    if versions:
        _write_models(store, sorted(versions), (min(years), max(years)), href_base, report)
    write_root(store, href_base)
    report.written.append(CATALOG_KEY)
    return report


def _root_base(store: Store) -> str | None:
    """The public URL a root written earlier was built for (its ``self`` link), if any."""
    root = _read_doc(store, CATALOG_KEY) or {}
    for link in root.get("links", []):
        href = str(link.get("href", ""))
        if link.get("rel") == "self" and href.endswith(CATALOG_KEY) and "://" in href:
            return href[: -len(CATALOG_KEY)].rstrip("/") or None
    return None


def write_root(store: Store, href_base: str | None = None) -> dict[str, Any]:
    """Write ``catalog.json`` with a child link to every collection present in ``store``.

    The one writer of the root: every command that adds a collection (``catalog build``,
    ``watersheds publish|join``, ``corestack import``) calls it, so the root lists every
    ``{collection}/collection.json`` whatever order they ran in. Without ``href_base``, the
    base of a root written earlier with absolute hrefs is kept.

    Returns:
        The root as written.
    """
    titles: dict[str, str] = {}
    for name in store.folders():
        doc = _read_doc(store, collection_key(name))
        if doc is not None and doc.get("type") == "Collection":
            titles[name] = str(doc.get("title") or name)
    base = href_base or _root_base(store)
    root = create_root_catalog(sorted(titles), titles)
    data = publish_hrefs(
        root.to_dict(include_self_link=False, transform_hrefs=False), CATALOG_KEY, base
    )
    store.put_bytes(dump_json(data), CATALOG_KEY, JSON_MEDIA_TYPE)
    return data


def collection_links(collection: dict[str, Any], item_ids: Iterable[str]) -> dict[str, Any]:
    """A Collection dict with root/parent links and one ``item`` link per Item.

    Items sit at ``{collection}/{item}/{item}.json`` (the watershed and import layout).
    """
    kept = [
        link
        for link in collection.get("links", [])
        if link.get("rel") not in ("root", "parent", "item", "self")
    ]
    to_root = relative_href(collection_key(str(collection["id"])), CATALOG_KEY)
    links = [
        {"rel": "root", "href": to_root, "type": JSON_MEDIA_TYPE},
        {"rel": "parent", "href": to_root, "type": JSON_MEDIA_TYPE},
        *kept,
        *(
            {"rel": "item", "href": f"./{i}/{i}.json", "type": GEOJSON_MEDIA_TYPE}
            for i in sorted(item_ids)
        ),
    ]
    return {**collection, "links": links}


def read_items(store: Store, collection_id: str) -> list[dict[str, Any]]:
    """Item dicts at ``{collection}/{item}/{item}.json`` (unreadable ones skipped)."""
    out: list[dict[str, Any]] = []
    for key in store.list(f"{collection_id}/"):
        parts = key.split("/")
        if len(parts) != 3 or parts[2] != f"{parts[1]}.json":
            continue
        data = _read_doc(store, key)
        if data is not None and data.get("type") == "Feature":
            out.append(data)
    return out


def _read_doc(store: Store, key: str) -> dict[str, Any] | None:
    """The JSON object at ``key``, or None when it is missing or not a JSON object."""
    if not store.exists(key):
        return None
    try:
        data = json.loads(store.read_bytes(key))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def put_collection(
    store: Store, collection: dict[str, Any], items: Iterable[dict[str, Any]]
) -> str:
    """Write ``{collection}/collection.json`` listing ``items``, then the root; its key."""
    key = collection_key(str(collection["id"]))
    data = collection_links(collection, (str(i["id"]) for i in items))
    store.put_bytes(dump_json(data), key, JSON_MEDIA_TYPE)
    write_root(store)
    return key


def temporal_extent(items: Iterable[dict[str, Any]]) -> tuple[datetime | None, datetime | None]:
    """[min, max] of the Items' ``datetime``/``start_datetime``/``end_datetime``."""
    times = [
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        for data in items
        for key in ("datetime", "start_datetime", "end_datetime")
        if (value := data.get("properties", {}).get(key))
    ]
    return (min(times), max(times)) if times else (None, None)


def _put(store: Store, key: str, obj: dict[str, Any], report: BuildReport) -> None:
    media = GEOJSON_MEDIA_TYPE if obj.get("type") == "Feature" else JSON_MEDIA_TYPE
    store.put_bytes(dump_json(obj), key, media)
    report.written.append(key)


def _write_collection(
    store: Store,
    cid: str,
    loaded: list[_Loaded],
    href_base: str | None,
    options: tuple[bool, bool],
    report: BuildReport,
) -> str | None:
    """Items (when their hrefs change), the parquet index, then the Collection."""
    found = sorted({str(i.item.properties.get(MODEL_VERSION_PROP)) for i in loaded})
    if len(found) != 1:
        report.problems.append(
            Problem(collection_key(cid), f"items of several model versions {found}: not built")
        )
        return None
    version = found[0]
    geoparquet, item_links = options
    try:
        collection = create_collection(
            [i.item for i in loaded], version, cid, link_items=item_links
        )
    except ValueError as exc:
        report.problems.append(Problem(collection_key(cid), str(exc)))
        return None
    _add_projection(store, collection, loaded)
    published = []
    for entry in loaded:
        final = publish_hrefs(entry.relative, entry.key, href_base)
        published.append(final)
        if final != entry.original:
            _put(store, entry.key, final, report)
            report.items_rewritten += 1
    ckey = collection_key(cid)
    if geoparquet:
        pkey = f"{cid}/{PARQUET_NAME}"
        store.put_bytes(items_to_parquet(published), pkey, PARQUET_MEDIA_TYPE)
        report.written.append(pkey)
        collection.add_asset(
            "geoparquet-items",
            pystac.Asset(
                href=f"./{PARQUET_NAME}",
                title="Index of the Items (stac-geoparquet)",
                media_type=PARQUET_MEDIA_TYPE,
                roles=["metadata", "stac-items"],
            ),
        )
    cdict = collection.to_dict(include_self_link=False, transform_hrefs=False)
    _put(store, ckey, publish_hrefs(cdict, ckey, href_base), report)
    report.collections[cid] = len(loaded)
    return version


def _add_projection(store: Store, collection: pystac.Collection, loaded: list[_Loaded]) -> None:
    """Store the Collection's fixed colour projection (PCA of a sample of its pixels) when
    its files can be read; the map tiles colour every Item and year with it."""
    from tessera_stac.catalog.projection import fit_collection_projection, item_href_in_store

    pairs = [(i.relative, item_href_in_store(store.uri, i.key)) for i in loaded]
    try:
        settings = getattr(store, "settings", None)  # S3: the endpoint and credentials
        gdal_env = settings.gdal_env() if settings is not None else None
        projection = fit_collection_projection(pairs, gdal_env)
    except Exception:  # unreadable files (or too few valid pixels): no projection, no harm
        return
    collection.extra_fields[c.PROJECTION_FIELD] = projection


def _write_models(
    store: Store,
    versions: list[str],
    years: tuple[int, int],
    href_base: str | None,
    report: BuildReport,
) -> None:
    models = [create_model_item(v, years=years) for v in versions]
    for model in models:
        key = model_item_key(model.id)
        d = model.to_dict(include_self_link=False, transform_hrefs=False)
        _put(store, key, publish_hrefs(d, key, href_base), report)
    ckey = collection_key(c.MODEL_COLLECTION_ID)
    cdict = create_model_collection(models + _other_models(store, models)).to_dict(
        include_self_link=False, transform_hrefs=False
    )
    _put(store, ckey, publish_hrefs(cdict, ckey, href_base), report)


def _other_models(store: Store, models: list[pystac.Item]) -> list[pystac.Item]:
    """Model Items already in ``tessera-models`` other than ``models`` (trained heads)."""
    ids = {m.id for m in models}
    out = []
    for d in read_items(store, c.MODEL_COLLECTION_ID):
        if d.get("id") in ids:
            continue
        try:
            out.append(pystac.Item.from_dict(d, preserve_dict=False))
        except Exception:
            continue
    return out


def put_model_collection(store: Store, href_base: str | None = None) -> str:
    """Rewrite ``tessera-models/collection.json`` listing every model Item present, then the root.

    Called when a head is trained (``classify train``); ``catalog build`` keeps the heads too.
    """
    items = [
        pystac.Item.from_dict(d, preserve_dict=False)
        for d in read_items(store, c.MODEL_COLLECTION_ID)
    ]
    ckey = collection_key(c.MODEL_COLLECTION_ID)
    cdict = create_model_collection(items).to_dict(include_self_link=False, transform_hrefs=False)
    base = href_base or _root_base(store)
    store.put_bytes(dump_json(publish_hrefs(cdict, ckey, base)), ckey, JSON_MEDIA_TYPE)
    write_root(store, base)
    return ckey


def items_to_parquet(items: list[dict[str, Any]]) -> bytes:
    """The stac-geoparquet encoding of ``items`` (bytes of a parquet file)."""
    import stac_geoparquet.arrow as sgpa

    with tempfile.TemporaryDirectory(prefix="tessera-stac-parquet-") as tmp:
        path = Path(tmp) / PARQUET_NAME
        reader = sgpa.parse_stac_items_to_arrow(items)
        sgpa.to_parquet(reader, path)
        return path.read_bytes()

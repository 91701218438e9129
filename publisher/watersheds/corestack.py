"""Import CoRE Stack's own static STAC catalogs into ours.

CoRE Stack publishes a tehsil-wise tree: ``catalog.json -> {state}/collection.json ->
{district}/catalog.json -> {block}/catalog.json -> {item}/{item}.json``. pgSTAC holds items only
in collections and collection ids must be unique, while CoRE Stack's block catalogs carry bare
block names (``koraput`` is both a district and a block; block names repeat across states). So
the importer makes one collection per block, ``corestack-{state}-{district}-{block}``, keeps item
ids, properties, assets and non-structural links (hrefs made absolute, a ``via`` link back to
the source document), and repairs or reports every defect it meets in a :class:`Defect` list:
nothing is dropped without a line saying so.

:func:`read_corestack_catalog` only reads and repairs (returns dicts); :func:`write_import`
writes them as a static catalog beside our collections.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import shapely
from shapely.geometry import mapping, shape

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.hrefs import is_public, is_url, resolve_href, source_identity
from tessera_stac.catalog.static import (
    collection_links,
    dump_json,
    item_links,
    temporal_extent,
    write_root,
)
from tessera_stac.catalog.store import open_store
from tessera_stac.publisher.watersheds.layer import bbox_of, normalise_name

COLLECTION_PREFIX = "corestack"
IMPORT_NOTE = "Imported from CoRE Stack's static STAC catalog by tessera-stac."
STRUCTURAL_RELS = {"root", "parent", "self", "child", "item", "collection"}
KNOWN_COLUMN_TYPES = {
    "geometry",
    "string",
    "binary",
    "boolean",
    "bool",
    "date",
    "timestamp",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float",
    "double",
    "float16",
    "float32",
    "float64",
    "decimal",
    "list",
    "struct",
}


@dataclass(frozen=True)
class Defect:
    """One problem found in the source catalog and what the importer did about it.

    Attributes:
        source: absolute href of the document the defect is in.
        object_id: id of the item/collection/catalog ('' when the document is unreadable).
        kind: short machine-readable code, e.g. ``asset-href-placeholder``.
        detail: one readable sentence.
        action: ``repaired`` (fixed in the imported copy), ``skipped`` (could not be imported)
            or ``kept`` (imported unchanged, reported for the record).
    """

    source: str
    object_id: str
    kind: str
    detail: str
    action: str

    def as_dict(self) -> dict[str, str]:
        """Plain dict for JSON output."""
        return {
            "source": self.source,
            "id": self.object_id,
            "kind": self.kind,
            "detail": self.detail,
            "action": self.action,
        }


@dataclass(frozen=True)
class ImportResult:
    """Collections and items ready to write or load, and every defect met."""

    source: str
    collections: tuple[dict[str, Any], ...]
    items: tuple[dict[str, Any], ...]
    defects: tuple[Defect, ...]
    written: tuple[Path, ...] = field(default_factory=tuple)

    def items_of(self, collection_id: str) -> list[dict[str, Any]]:
        """Items of one imported collection."""
        return [i for i in self.items if i["collection"] == collection_id]


class _UnreadableError(Exception):
    """A document could not be read or parsed."""


# ------------------------------------------------------------------------------- sources
def _resolve(base: str, href: str) -> str:
    """Absolute href of ``href`` relative to the document at ``base``."""
    return resolve_href(href.strip().removeprefix("file://"), base)


def _source_link(href: str, title: str) -> list[dict[str, Any]]:
    """A ``via`` link to the source document when it is public (a local path never is)."""
    if not is_public(href):
        return []
    return [{"rel": "via", "href": href, "type": "application/json", "title": title}]


def _read_json(href: str, timeout: float = 30.0) -> dict[str, Any]:
    try:
        if is_url(href):
            import httpx

            response = httpx.get(href, timeout=timeout, follow_redirects=True)
            if response.status_code != 200:
                raise _UnreadableError(f"HTTP {response.status_code}")
            text = response.text
        else:
            text = Path(href).read_text()
    except _UnreadableError:
        raise
    except Exception as exc:  # network or file system: the reason goes into the defect
        raise _UnreadableError(f"{type(exc).__name__}: {exc}") from exc
    if not text.strip():
        raise _UnreadableError("the file is empty (0 bytes)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _UnreadableError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _UnreadableError("not a JSON object")
    return data


def _root_href(source: str) -> str:
    if is_url(source):
        return source if source.endswith(".json") else source.rstrip("/") + "/catalog.json"
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        path = path / "catalog.json"
    if not path.exists():
        raise InputError(f"{source}: no CoRE Stack catalog.json there")
    return str(path)


# ------------------------------------------------------------------------------ the walk
@dataclass
class _Node:
    """A catalog/collection of the source tree with its ancestors (root excluded)."""

    href: str
    doc: dict[str, Any]
    chain: tuple[dict[str, Any], ...]


@dataclass
class _Walk:
    defects: list[Defect] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)
    items: list[tuple[str, dict[str, Any], tuple[dict[str, Any], ...]]] = field(
        default_factory=list
    )
    containers: dict[str, _Node] = field(default_factory=dict)
    root: str = ""  # folder (or URL) of the source root catalog

    def defect(self, source: str, oid: str, kind: str, detail: str, action: str) -> None:
        self.defects.append(Defect(source, oid, kind, detail, action))


def _find_unlinked(walk: _Walk, root_href: str) -> None:
    """Local sources: item files on disk no link points to (imported, reported)."""
    if is_url(root_href):
        return
    root_dir = Path(root_href).parent
    by_dir = {str(Path(h).parent): node for h, node in walk.containers.items()}
    for path in sorted(root_dir.rglob("*.json")):
        href = str(path.resolve())
        if href in walk.visited:
            continue
        walk.visited.add(href)
        parent = by_dir.get(str(path.parent.parent)) or by_dir.get(str(path.parent))
        try:
            doc = _read_json(href)
        except _UnreadableError as exc:
            walk.defect(
                href, path.stem, "unreadable", f"unlinked file cannot be read: {exc}", "skipped"
            )
            continue
        if doc.get("type") != "Feature" or parent is None:
            walk.defect(
                href,
                str(doc.get("id", path.stem)),
                "unlinked-document",
                "a STAC document no link points to; not imported",
                "skipped",
            )
            continue
        walk.defect(
            href,
            str(doc.get("id", "")),
            "unlinked-item",
            "item file not linked from its catalog; imported",
            "repaired",
        )
        walk.items.append((href, doc, (*parent.chain, parent.doc)))


# ---------------------------------------------------------------------------- repairing
def block_keys(chain: tuple[dict[str, Any], ...]) -> tuple[str, ...]:
    """Normalised ids of the state/district/block containers above an item (root dropped)."""
    return tuple(normalise_name(str(d.get("id", ""))) for d in chain[1:] if d.get("id"))


def collection_id_for(keys: tuple[str, ...]) -> str:
    """Our unique collection id of a CoRE Stack block: ``corestack-{state}-{district}-{block}``."""
    return "-".join([COLLECTION_PREFIX, *keys]) if keys else f"{COLLECTION_PREFIX}-unsorted"


def _fix_links(doc: dict[str, Any], href: str, oid: str, walk: _Walk) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    for link in doc.get("links", []):
        if link.get("rel") in STRUCTURAL_RELS or not isinstance(link.get("href"), str):
            continue
        fixed = dict(link)
        fixed["href"] = _resolve(href, link["href"])
        if not is_public(fixed["href"]):
            walk.defect(
                href, oid, "local-link", f"{link['rel']} link to a local file dropped", "repaired"
            )
            continue
        path = urlsplit(fixed["href"]).path.lower()
        if fixed.get("type") == "application/pdf" and not path.endswith(".pdf"):
            del fixed["type"]
            walk.defect(
                href,
                oid,
                "link-media-type",
                f"{link['rel']} link to {fixed['href']} is typed application/pdf but is "
                "not a PDF; type removed",
                "repaired",
            )
        links.append(fixed)
    return links + _source_link(href, "Source document in the CoRE Stack catalog")


def _placeholder(href: str, resolved: str) -> str | None:
    """Why an asset href cannot be a real target (None when it may be fine)."""
    text = href.strip()
    if not text:
        return "empty href"
    if " " in text:
        return "href contains spaces (a placeholder, not a file name)"
    if not (is_url(text) or urlsplit(resolved).scheme) and not Path(resolved).exists():
        return "relative href to a file that does not exist"
    if not is_public(resolved):
        return "local file of the source catalog (not copied; only public hrefs are published)"
    return None


def _fix_assets(item: dict[str, Any], href: str, walk: _Walk) -> None:
    removed: dict[str, Any] = {}
    for key, asset in list(item.get("assets", {}).items()):
        raw = asset.get("href")
        if not isinstance(raw, str):
            removed[key] = {"href": raw, "reason": "no href"}
            del item["assets"][key]
            continue
        resolved = _resolve(href, raw)
        reason = _placeholder(raw, resolved)
        if reason:
            removed[key] = {"href": raw, "reason": reason}
            del item["assets"][key]
            walk.defect(
                href,
                item["id"],
                "asset-href-placeholder",
                f"asset {key!r} href {raw!r}: {reason}; asset removed and recorded in "
                "corestack:removed_assets",
                "repaired",
            )
            continue
        if raw != raw.strip():
            walk.defect(
                href,
                item["id"],
                "asset-href-whitespace",
                f"asset {key!r} href {raw!r}: spaces stripped",
                "repaired",
            )
        asset["href"] = resolved
    if removed:
        item["properties"]["corestack:removed_assets"] = removed


def _flatten_collection(geom: Any) -> Any:
    """A GeometryCollection as one Multi* geometry of its highest-dimension parts."""
    parts = list(shapely.get_parts(geom))
    top = max(shapely.get_dimensions(parts))
    kept = [p for p in parts if shapely.get_dimensions(p) == top]
    if top == 2:
        merged = shapely.union_all(kept)
        return merged if merged.geom_type == "MultiPolygon" else shapely.MultiPolygon([merged])
    if top == 1:
        return shapely.MultiLineString([ln for p in kept for ln in shapely.get_parts(p)])
    return shapely.MultiPoint([pt for p in kept for pt in shapely.get_parts(p)])


def _fix_geometry(item: dict[str, Any], href: str, walk: _Walk) -> bool:
    if not item.get("geometry"):
        walk.defect(
            href, item["id"], "no-geometry", "item has no geometry; not imported", "skipped"
        )
        return False
    geom = shape(item["geometry"])
    if geom.geom_type == "GeometryCollection":
        geom = _flatten_collection(geom)
        item["geometry"] = mapping(geom)
        walk.defect(
            href,
            item["id"],
            "geometry-collection",
            f"GeometryCollection is not a valid STAC item geometry; merged into a {geom.geom_type}",
            "repaired",
        )
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
        item["geometry"] = mapping(geom)
        walk.defect(
            href, item["id"], "invalid-geometry", "geometry repaired (make_valid)", "repaired"
        )
    bounds = [round(v, 8) for v in geom.bounds]
    bbox = item.get("bbox")
    if (
        not bbox
        or len(bbox) < 4
        or max(abs(a - b) for a, b in zip(bbox, bounds, strict=False)) > 1e-6
    ):
        item["bbox"] = bounds
        walk.defect(
            href,
            item["id"],
            "bbox",
            f"bbox {bbox} does not match the geometry; recomputed",
            "repaired",
        )
    return True


def _drop_empty_text(item: dict[str, Any], href: str, walk: _Walk) -> None:
    """STAC 1.1 wants ``title``/``description`` non-empty when present: drop empty ones."""
    places = [("properties", item["properties"])]
    places += [(f"asset {k!r}", a) for k, a in item.get("assets", {}).items()]
    for where, obj in places:
        for key in ("title", "description"):
            if key in obj and not str(obj[key] or "").strip():
                del obj[key]
                walk.defect(
                    href,
                    item["id"],
                    "empty-text",
                    f"{where}: empty {key} removed (STAC requires it non-empty)",
                    "repaired",
                )


def _check_table(item: dict[str, Any], href: str, walk: _Walk) -> None:
    columns = item["properties"].get("table:columns") or []
    odd = sorted(
        {str(c.get("type")) for c in columns if str(c.get("type")) not in KNOWN_COLUMN_TYPES}
    )
    if odd:
        walk.defect(
            href,
            item["id"],
            "table-column-types",
            f"table:columns types {odd} are pandas dtypes, not Parquet/Arrow types; kept",
            "kept",
        )


def _import_item(
    href: str, doc: dict[str, Any], chain: tuple[dict[str, Any], ...], walk: _Walk
) -> dict[str, Any] | None:
    # a copy to repair (the geometry is replaced, never edited in place: not copied)
    item = {k: v if k == "geometry" else copy.deepcopy(v) for k, v in doc.items()}
    oid = str(item.get("id") or "")
    if not oid:
        walk.defect(href, "", "no-id", "item without an id; not imported", "skipped")
        return None
    props = item.setdefault("properties", {})
    if not props.get("datetime") and not (
        props.get("start_datetime") and props.get("end_datetime")
    ):
        walk.defect(href, oid, "no-datetime", "item has no datetime; not imported", "skipped")
        return None
    if not _fix_geometry(item, href, walk):
        return None
    _drop_empty_text(item, href, walk)
    keys = block_keys(chain)
    coll_id = collection_id_for(keys)
    if item.get("collection") not in (None, coll_id):
        walk.defect(
            href,
            oid,
            "collection-id",
            f"collection {item['collection']!r} renamed to {coll_id!r}",
            "repaired",
        )
    item["collection"] = coll_id
    item.setdefault("stac_version", "1.1.0")
    item["links"] = _fix_links(item, href, oid, walk)
    props["corestack:source"] = source_identity(href, walk.root)
    _fix_assets(item, href, walk)
    _check_table(item, href, walk)
    prefix = "_".join(keys) + "_"
    if len(keys) == 3:
        props.update(
            dict(
                zip(("corestack:state", "corestack:district", "corestack:block"), keys, strict=True)
            )
        )
    if keys and oid.startswith(prefix):
        props["corestack:layer"] = oid[len(prefix) :]
    elif keys:
        walk.defect(href, oid, "item-id", f"id does not start with {prefix!r}; kept", "kept")
    return item


def _make_collection(
    coll_id: str,
    chain: tuple[dict[str, Any], ...],
    items: list[dict[str, Any]],
    block_href: str,
    walk: _Walk,
) -> dict[str, Any]:
    """One of our collections for a CoRE Stack block (metadata from the state collection)."""
    state = next((d for d in chain if d.get("type") == "Collection"), {})
    block = chain[-1] if chain else {}
    names = [str(d.get("id")) for d in chain[1:]]
    interval = (state.get("extent", {}).get("temporal", {}).get("interval") or [[None, None]])[0]
    bbox, (first, last) = bbox_of(items), temporal_extent(items)
    start, end = interval[0], interval[1]
    if first and last:
        lo, hi = (
            first.isoformat().replace("+00:00", "Z"),
            last.isoformat().replace("+00:00", "Z"),
        )
        if (start and _t(start) > first) or (end and _t(end) < last):
            walk.defect(
                state.get("_href", block_href),
                str(state.get("id", "")),
                "temporal-extent",
                f"item datetimes {lo}..{hi} lie outside the collection interval "
                f"{start}..{end}; widened in {coll_id}",
                "repaired",
            )
            start = min(filter(None, [start, lo]), key=_t)
            end = max(filter(None, [end, hi]), key=_t)
    keywords = list(dict.fromkeys(state.get("keywords", [])))
    links = _fix_links(state, state.get("_href", block_href), coll_id, walk) if state else []
    links = [lk for lk in links if lk["rel"] != "via"]
    links += _source_link(block_href, "Block catalog in the CoRE Stack catalog")
    return {
        "corestack:source": source_identity(block_href, walk.root),
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": coll_id,
        "title": _title(names),
        "description": " ".join(
            str(text)
            for text in (block.get("description"), state.get("description"), IMPORT_NOTE)
            if text
        ),
        "license": state.get("license", "other"),
        "keywords": keywords,
        "providers": state.get("providers", []),
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[start, end]]}},
        "summaries": {
            "corestack:layer": sorted(
                {
                    i["properties"]["corestack:layer"]
                    for i in items
                    if "corestack:layer" in i["properties"]
                }
            )
        },
        "links": links,
    }


def _title(names: list[str]) -> str:
    if len(names) == 3:
        state, district, block = names
        return f"CoRE Stack layers: {block} block, {district} district, {state}"
    return "CoRE Stack layers: " + " / ".join(reversed(names))


def _stem(href: str) -> str:
    """File name without extension: the id a CoRE Stack item file would have."""
    return Path(urlsplit(href).path).stem


def _t(text: str) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _report_containers(walk: _Walk) -> None:
    for href, node in walk.containers.items():
        doc = node.doc
        if doc.get("type") == "Collection":
            doc["_href"] = href
            boxes = doc.get("extent", {}).get("spatial", {}).get("bbox") or []
            if not boxes or all(all(v == 0 for v in b) for b in boxes):
                walk.defect(
                    href,
                    str(doc.get("id")),
                    "spatial-extent",
                    f"collection extent bbox is {boxes}; recomputed from the items",
                    "repaired",
                )
            kws = doc.get("keywords", [])
            if len(kws) != len(set(kws)):
                walk.defect(
                    href,
                    str(doc.get("id")),
                    "duplicate-keywords",
                    "keywords listed twice; deduplicated",
                    "repaired",
                )


def read_corestack_catalog(source: str | Path) -> ImportResult:
    """Read a CoRE Stack static catalog (folder, catalog.json path or URL) and repair it.

    Returns:
        Our collections (one per block) and items as dicts with absolute hrefs, and the
        defect list. Unreadable documents are listed as ``skipped`` defects.

    Raises:
        InputError: the root catalog itself cannot be read.
    """
    root_href = _root_href(str(source))
    try:
        root = _read_json(root_href)
    except _UnreadableError as exc:
        raise InputError(f"{root_href}: cannot read the CoRE Stack root catalog: {exc}") from exc
    if root.get("type") not in ("Catalog", "Collection"):
        raise InputError(f"{root_href}: not a STAC catalog (type {root.get('type')!r})")
    walk = _Walk(root=root_href.rsplit("/", 1)[0])
    walk.visited.add(root_href)
    walk.containers[root_href] = _Node(root_href, root, ())
    for link in root.get("links", []):
        if link.get("rel") in ("child", "item") and isinstance(link.get("href"), str):
            _walk_child(walk, _resolve(root_href, link["href"]), (root,))
    _find_unlinked(walk, root_href)
    _report_containers(walk)
    items: list[dict[str, Any]] = []
    chains: dict[str, tuple[tuple[dict[str, Any], ...], str]] = {}
    seen_ids: dict[tuple[str, str], str] = {}
    for href, doc, chain in walk.items:
        item = _import_item(href, doc, chain, walk)
        if item is None:
            continue
        key = (item["collection"], item["id"])
        if key in seen_ids:
            walk.defect(
                href,
                item["id"],
                "duplicate-id",
                f"same id as {seen_ids[key]}; not imported twice",
                "skipped",
            )
            continue
        seen_ids[key] = href
        items.append(item)
        block_href = next((h for h, n in walk.containers.items() if n.doc is chain[-1]), href)
        chains.setdefault(item["collection"], (chain, block_href))
    collections = [
        _make_collection(cid, chain, [i for i in items if i["collection"] == cid], bhref, walk)
        for cid, (chain, bhref) in sorted(chains.items())
    ]
    for node in walk.containers.values():
        node.doc.pop("_href", None)
    return ImportResult(root_href, tuple(collections), tuple(items), tuple(walk.defects))


def _walk_child(walk: _Walk, href: str, chain: tuple[dict[str, Any], ...]) -> None:
    """Depth-first walk keeping the chain of containers above each document."""
    if href in walk.visited:
        return
    walk.visited.add(href)
    try:
        doc = _read_json(href)
    except _UnreadableError as exc:
        walk.defect(
            href, _stem(href), "unreadable", f"linked document cannot be read: {exc}", "skipped"
        )
        return
    if doc.get("type") == "Feature":
        walk.items.append((href, doc, chain))
        return
    walk.containers[href] = _Node(href, doc, chain)
    for link in doc.get("links", []):
        if link.get("rel") in ("child", "item") and isinstance(link.get("href"), str):
            _walk_child(walk, _resolve(href, link["href"]), (*chain, doc))


# ------------------------------------------------------------------------------- writing
def write_import(result: ImportResult, root: str | Path) -> ImportResult:
    """Write the imported collections and items under ``root`` (one folder per collection).

    Each collection folder is staged completely, then swapped in; the root ``catalog.json``
    is rewritten to list every collection present (``catalog.static.write_root``).
    """
    store = open_store(str(root))
    written: list[Path] = []
    for coll in result.collections:
        cid = str(coll["id"])
        items = result.items_of(cid)
        staged = store.stage(cid)
        try:
            data = collection_links(coll, (str(i["id"]) for i in items))
            (staged / "collection.json").write_bytes(dump_json(data))
            for item in items:
                key = f"{cid}/{item['id']}/{item['id']}.json"
                (staged / str(item["id"])).mkdir()
                (staged / str(item["id"]) / f"{item['id']}.json").write_bytes(
                    dump_json(item_links(item, key, cid))
                )
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        store.put_folder(staged, cid)
        written.append(Path(store.uri) / cid / "collection.json")
    write_root(store)
    return ImportResult(
        result.source, result.collections, result.items, result.defects, tuple(written)
    )


def iter_static(result: ImportResult) -> Iterator[dict[str, Any]]:
    """Collections then items, as plain dicts (e.g. for a pgSTAC loader)."""
    yield from result.collections
    yield from result.items

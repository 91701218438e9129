"""stac-fastapi-pgstac's client and Query extension, extended (not forked).

* ``TesseraClient.landing_page``: gains titled ``child`` links to every collection (the TESSERA
  embedding collections, the model collection and the CoRE Stack collections first) and a link
  to our extension schema.
* The Query extension's string operators (``startsWith``, ``endsWith``, ``contains``) and ``in``:
  the spec defines them, stac-fastapi-pgstac's request model refuses them. Our model accepts
  them and ``TesseraClient`` rewrites such a query into the equivalent CQL2-JSON filter
  (``like``/``in``), which pgSTAC evaluates with the registered queryables.
"""

from __future__ import annotations

import logging
import os
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

import attr
from fastapi import Request
from pydantic import BaseModel, BeforeValidator, Field
from stac_fastapi.extensions import FieldsExtension
from stac_fastapi.extensions.fields.request import PostFieldsExtension
from stac_fastapi.pgstac.core import CoreCrudClient
from stac_fastapi.pgstac.extensions import QueryExtension
from stac_fastapi.types.requests import get_base_url
from starlette.responses import Response

from tessera_stac.api.compat import cql2_text_to_json, with_v1_0_aliases
from tessera_stac.catalog import constants as c

logger = logging.getLogger(__name__)

#: Collection id prefixes listed first on the landing page, in this order.
FEATURED_PREFIXES: tuple[str, ...] = (
    c.EMBEDDING_COLLECTION_PREFIX,
    c.MODEL_COLLECTION_ID,
    c.CORESTACK_COLLECTION_PREFIX,
)
MAX_CHILD_LINKS = 500


def featured_rank(collection_id: str) -> tuple[int, str]:
    """Sort key: featured prefixes first (in their order), then the rest by id."""
    for rank, prefix in enumerate(FEATURED_PREFIXES):
        if collection_id.startswith(prefix):
            return rank, collection_id
    return len(FEATURED_PREFIXES), collection_id


@attr.s
class TesseraClient(CoreCrudClient):
    """CoreCrudClient with a landing page that lists and links the collections."""

    async def landing_page(self, **kwargs: Any) -> Any:
        """The landing page with titled ``child`` links to the collections."""
        page = await super().landing_page(**kwargs)
        request: Request = kwargs["request"]
        base_url = get_base_url(request)
        async with request.app.state.get_connection(request, "r") as conn:
            rows = await conn.fetch(
                "SELECT id, coalesce(content->>'title', id) AS title FROM pgstac.collections "
                "ORDER BY id LIMIT $1",
                MAX_CHILD_LINKS,
            )
        links = page["links"]
        for row in sorted(rows, key=lambda r: featured_rank(r["id"])):
            links.append(
                {
                    "rel": "child",
                    "type": "application/json",
                    "title": row["title"],
                    "href": f"{base_url}collections/{row['id']}",
                }
            )
        links.append(
            {
                "rel": "describedby",
                "type": "application/schema+json",
                "title": "TESSERA embedding extension schema",
                "href": f"{base_url}{request.app.state.embedding_schema_path.lstrip('/')}",
            }
        )
        return page

    def conformance_classes(self) -> list[str]:
        """The classes, plus v1.0.0 aliases pystac-client recognises (``api.compat``)."""
        return with_v1_0_aliases(super().conformance_classes())

    async def get_item(
        self, item_id: str, collection_id: str, request: Request, **kwargs: Any
    ) -> Any:
        """GET an Item, with web-map-links to its map tiles (``api.tiles``)."""
        from tessera_stac.api.tiles import add_item_links

        item = await super().get_item(item_id, collection_id, request=request, **kwargs)
        return await add_item_links(public_items(item, request), request)

    async def get_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Any:
        """GET a Collection, with web-map-links to the mosaics of its years (``api.tiles``)."""
        from tessera_stac.api.tiles import add_collection_links

        collection = await super().get_collection(collection_id, request=request, **kwargs)
        return add_collection_links(public_items(collection, request), request)

    async def all_collections(self, request: Request, **kwargs: Any) -> Any:
        """GET /collections, with no server paths (:func:`public_items`)."""
        return public_items(await super().all_collections(request=request, **kwargs), request)

    async def post_search(self, search_request: Any, request: Request, **kwargs: Any) -> Any:
        """POST /search; a fields-filtered answer is still GeoJSON (media type kept); a CQL2
        text filter is accepted (translated to CQL2 JSON, ``api.compat``)."""
        cql2_text_to_json(search_request)
        return _geojson(await super().post_search(search_request, request=request, **kwargs))

    async def get_search(self, request: Request, **kwargs: Any) -> Any:
        """GET /search; a fields-filtered answer is still GeoJSON (media type kept)."""
        return _geojson(await super().get_search(request=request, **kwargs))

    async def _search_base(self, search_request: Any, request: Request) -> Any:
        """pgSTAC search; a query using string/set operators goes as its CQL2 filter.

        Fields: an ``exclude`` with an empty or null ``include`` removes fields from the
        extension's default set (with no ``include`` at all, from the whole item), and a
        filtered item always keeps ``type`` (it is still GeoJSON).
        """
        bbox = getattr(search_request, "bbox", None)
        if bbox is not None and len(bbox) == 6:
            # items are 2D: a 3D box would reach PostGIS as a PolyhedralSurface it cannot
            # intersect with polygons; its horizontal extent is what selects items
            search_request.bbox = (bbox[0], bbox[1], bbox[3], bbox[4])
        fields = getattr(search_request, "fields", None)
        if fields is not None:
            explicit_empty = "include" in fields.model_fields_set and not fields.include
            if explicit_empty and fields.exclude:
                fields.include = set(DEFAULT_FIELDS) - set(fields.exclude)
            if fields.include:
                fields.include = {*fields.include, "type"}
        query = getattr(search_request, "query", None)
        if _uses_string_ops(query):
            search_request.query = None
            arrays = await _array_queryables(request)
            search_request.filter_expr = query_to_cql2(query or {}, arrays)
            search_request.filter_lang = "cql2-json"
        return public_items(await super()._search_base(search_request, request=request), request)


class QueryOperator(StrEnum):
    """Query extension operators: pgstac's comparisons plus the spec's string/set ones."""

    eq = "eq"
    ne = "ne"
    neq = "neq"
    lt = "lt"
    lte = "lte"
    gt = "gt"
    gte = "gte"
    startsWith = "startsWith"  # noqa: N815 (the spec's spelling)
    endsWith = "endsWith"  # noqa: N815
    contains = "contains"
    in_ = "in"


def _one_or_many(value: Any) -> Any:
    """Accept ``"collections": "a,b"`` (a string) as well as the spec's array."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class QueryPostRequest(BaseModel):
    """Query extension POST model accepting every operator of the spec.

    Also lenient on ``collections`` given as a string, as some clients (stac-api-validator
    among them) send it.
    """

    query: dict[str, dict[QueryOperator, Any]] | None = None
    collections: Annotated[list[str] | None, BeforeValidator(_one_or_many)] = None


class FullQueryExtension(QueryExtension):
    """stac-fastapi-pgstac's Query extension with the full operator set."""

    POST = QueryPostRequest


def _no_null(value: Any) -> Any:
    if value is None:
        raise ValueError("fields must be an object with include/exclude, not null")
    return value


class StrictFieldsPostRequest(BaseModel):
    """Fields extension POST model that refuses ``"fields": null`` (a 400, per the spec)."""

    fields: Annotated[PostFieldsExtension | None, BeforeValidator(_no_null)] = Field(
        PostFieldsExtension(), description="Include or exclude fields from items body."
    )


class StrictFieldsExtension(FieldsExtension):
    """stac-fastapi's Fields extension with the stricter POST model."""

    POST = StrictFieldsPostRequest


def _like_escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def query_to_cql2(
    query: dict[str, dict[Any, Any]], array_props: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The CQL2-JSON filter equivalent to a Query extension object.

    ``in`` on a property whose queryable is an array means "shares a value" (``a_overlaps``).
    """
    clauses: list[dict[str, Any]] = []
    for prop, ops in query.items():
        ref = {"property": prop}
        for op, value in ops.items():
            name = op.value if isinstance(op, Enum) else str(op)
            if name == "startsWith":
                clauses.append({"op": "like", "args": [ref, f"{_like_escape(value)}%"]})
            elif name == "endsWith":
                clauses.append({"op": "like", "args": [ref, f"%{_like_escape(value)}"]})
            elif name == "contains":
                clauses.append({"op": "like", "args": [ref, f"%{_like_escape(value)}%"]})
            elif name == "in":
                values = value if isinstance(value, list) else [value]
                op_name = "a_overlaps" if prop in array_props else "in"
                clauses.append({"op": op_name, "args": [ref, values]})
            else:
                cql = {"ne": "<>", "neq": "<>", "eq": "=", "lt": "<", "lte": "<=", "gt": ">"}
                clauses.append({"op": cql.get(name, ">="), "args": [ref, value]})
    return clauses[0] if len(clauses) == 1 else {"op": "and", "args": clauses}


#: The Fields extension's default set, what an ``exclude``-only request subtracts from.
DEFAULT_FIELDS = frozenset(
    {
        "type",
        "stac_version",
        "stac_extensions",
        "id",
        "geometry",
        "bbox",
        "links",
        "assets",
        "collection",
        "properties.datetime",
    }
)
STRING_OPS = frozenset({"startsWith", "endsWith", "contains", "in"})


def _uses_string_ops(query: dict[str, dict[Any, Any]] | None) -> bool:
    return bool(query) and any(
        (op.value if isinstance(op, Enum) else str(op)) in STRING_OPS
        for ops in (query or {}).values()
        for op in ops
    )


async def _array_queryables(request: Request) -> frozenset[str]:
    """Names of the queryables typed as arrays (cached for a minute)."""
    import time

    state = request.app.state
    cached = getattr(state, "array_queryables", None)
    if cached is None or time.monotonic() - cached[0] > 60:
        async with state.get_connection(request, "r") as conn:
            rows = await conn.fetch(
                "SELECT name FROM pgstac.queryables WHERE definition->>'type' = 'array'"
            )
        cached = (time.monotonic(), frozenset(r["name"] for r in rows))
        state.array_queryables = cached
    names: frozenset[str] = cached[1]
    return names


def _geojson(result: Any) -> Any:
    """stac-fastapi-pgstac answers fields-filtered searches as plain JSON: label them GeoJSON."""
    if isinstance(result, Response):
        result.headers["content-type"] = "application/geo+json"
    return result


# ------------------------------------------------------------ no server paths in answers
def _local_path(href: str) -> str | None:
    """The filesystem path an href names (``/abs/path`` or ``file://``), else None."""
    parts = urlsplit(href)
    if parts.scheme == "file":
        return unquote(parts.path)
    if not parts.scheme and href.startswith("/"):
        return href
    return None


#: First path segments of the API's own routes (a link there is never a server path).
API_ROOTS = frozenset(
    {"", "api", "api.html", "api-docs-static", "browser", "change", "classify", "collections",
     "conformance", "data", "docs", "embeddings", "features", "healthz", "queryables",
     "schemas", "search", "tiles", "watersheds"}
)  # fmt: skip


def _server_path(path: str) -> bool:
    """A path that stac-fastapi resolved against the API but that names a place on the
    server's disk (its first folder exists there, and it is no route of ours)."""
    first = path.lstrip("/").split("/", 1)[0]
    return first not in API_ROOTS and "/" in path.lstrip("/") and os.path.isdir("/" + first)


def _served(path: str, root: Path | None, base_url: str) -> str | None:
    """The ``/data`` URL of a server path inside the data dir, else None."""
    target = Path(os.path.realpath(path))
    if root is not None and target.is_relative_to(root):
        return f"{base_url.rstrip('/')}/data/{quote(target.relative_to(root).as_posix())}"
    return None


def public_item(item: Any, base_url: str, data_dir: Path | None) -> Any:
    """``item`` (or a Collection) as a client may see it: an asset or link href that is a
    server path is served through the API's own ``/data`` route when it lies in ``data_dir``,
    and withheld otherwise (the server's filesystem layout is never disclosed, and no client
    gets a path it cannot follow). Links come resolved against the API by stac-fastapi, so a
    link to this host whose path is a file on the server counts as a server path. Returns
    the document (changed in place)."""
    if not isinstance(item, dict):
        return item
    root = Path(os.path.realpath(data_dir)) if data_dir is not None else None
    assets = item.get("assets")
    if isinstance(assets, dict):
        for key in list(assets):
            asset = assets[key]
            href = asset.get("href") if isinstance(asset, dict) else None
            path = _local_path(href) if isinstance(href, str) else None
            if path is None:
                continue
            url = _served(path, root, base_url)
            if url is not None:
                asset["href"] = url
            else:
                _withheld(str(item.get("collection") or item.get("id")), key)
                del assets[key]
    links = item.get("links")
    if isinstance(links, list):
        base = urlsplit(base_url)
        kept = []
        for link in links:
            href = link.get("href") if isinstance(link, dict) else None
            if isinstance(href, str):
                path = _local_path(href)
                parts = urlsplit(href)
                if path is None and parts.netloc == base.netloc:
                    own = unquote(parts.path)
                    prefix = base.path.rstrip("/")
                    own = own[len(prefix) :] if prefix and own.startswith(prefix) else own
                    path = own if _server_path(own) else None
                if path is not None:
                    url = _served(path, root, base_url)
                    if url is None:
                        continue
                    link["href"] = url
            kept.append(link)
        item["links"] = kept
    return item


_WARNED: set[tuple[str, str]] = set()


def _withheld(collection: str, key: str) -> None:
    if (collection, key) not in _WARNED and len(_WARNED) < 1000:
        _WARNED.add((collection, key))
        logger.warning(
            "collection %s: asset %r has a server path outside the data dir; not served "
            "(load the catalog with --base-url, or serve its folder with --data-dir)",
            collection,
            key,
        )


def public_items(result: Any, request: Request) -> Any:
    """:func:`public_item` over an Item or the features of an ItemCollection."""
    from stac_fastapi.types.requests import get_base_url

    settings = getattr(request.app.state, "api_settings", None)
    data_dir = getattr(settings, "data_dir", None)
    base = get_base_url(request)
    if isinstance(result, dict):
        for many in ("features", "collections"):
            if isinstance(result.get(many), list):
                for feature in result[many]:
                    public_item(feature, base, data_dir)
                return result
    return public_item(result, base, data_dir)

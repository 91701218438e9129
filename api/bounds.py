"""Bounds on every request, checked before any parser (CQL2, JSON models, pgSTAC) sees it.

A pure ASGI middleware (``BoundsMiddleware``) in front of the routes:

* request body: at most ``max_body_bytes`` (413); a body must be one JSON object, UTF-8,
  without ``NaN``/``Infinity`` or unpaired surrogates, nested at most ``max_json_depth`` (400);
* ``filter`` (query parameter or body member, CQL2 text or JSON): at most ``max_filter_chars``
  characters and ``max_filter_depth`` levels (400) - the CQL2 parser and validator overflow
  the stack or take gigabytes on deep nesting, so nothing deep may reach them;
* ``query=`` and ``intersects=`` parameters: JSON objects (400); numeric parameters (``limit``,
  ``bbox``, ``lon``...) finite (400);
* ``limit`` larger than ``max_limit`` is capped (in the query string or the ``/search`` body,
  so paging links carry the limit that was applied).

Each refusal is the API's error shape ``{"code", "description"}`` naming the bound. The
depth scans are iterative: no input can make them recurse.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera_stac.api.settings import ApiSettings

#: Query parameters that must be finite numbers (comma-separated lists for bbox).
NUMERIC_PARAMS = frozenset({"limit", "offset", "bbox", "lon", "lat", "year", "k"})
#: Query parameters holding JSON objects (stac-fastapi decodes them with ``unquote_plus``).
JSON_PARAMS = frozenset({"query", "intersects"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: pgSTAC's mosaic search limits (titiler-pgstac query parameters), capped like ``limit``.
MOSAIC_CAPS: dict[str, Any] = {
    "items_limit": lambda s: s.tile_max_items,
    "scan_limit": lambda s: 10_000,
    "time_limit": lambda s: 5,
}
#: CQL2 text keywords that nest their operand (prefix operators).
_PREFIX_WORDS = frozenset({"NOT"})
_CHAIN_BREAKS = frozenset({"AND", "OR"})


class BoundError(Exception):
    """A request outside a bound: ``status``, ``code`` and a description naming the bound."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description


# ------------------------------------------------------------------------ depth scanners
#: a JSON string (escapes included), or an unterminated one running to the end of the text
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)


def json_text_depth(text: str | bytes) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, strings skipped (no parse, no recursion):
    the strings cut out by one regular expression, the brackets counted by numpy (a 50 kB
    body of points in ~0.2 ms, where a Python loop over its bytes took ~5 ms)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    bare = np.frombuffer(_JSON_STRING.sub(b"", data), dtype=np.uint8)
    steps = (bare == 0x5B).astype(np.int32)
    steps += bare == 0x7B
    steps -= bare == 0x5D
    steps -= bare == 0x7D
    return max(0, int(np.cumsum(steps).max(initial=0)))


def header_qualities(header: str, limit: int = 32) -> dict[str, float]:
    """Value -> quality of a header with ``q`` parameters (``Accept``, ``Accept-Encoding``;
    RFC 9110 12.4.2): names lower-cased, qualities clamped to 0..1, a malformed one counts
    as 0; at most ``limit`` entries are looked at."""
    out: dict[str, float] = {}
    for entry in header.split(",")[:limit]:
        name, *params = (part.strip() for part in entry.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        if name:
            out[name.lower()] = max(out.get(name.lower(), 0.0), quality)
    return out


def _cql2_tokens(text: str) -> Iterable[str]:
    """Parentheses and bare words of a CQL2 text (string literals and quoted names skipped)."""
    word: list[str] = []
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
            continue
        if char in "'\"":
            quote = char
        if char.isalnum() or char in "_:.":
            word.append(char)
            continue
        if word:
            yield "".join(word)
            word = []
        if char in "()":
            yield char
    if word:
        yield "".join(word)


def cql2_text_depth(text: str) -> int:
    """Nesting depth of a CQL2 text: parentheses (groups, function calls, lists) and chains of
    prefix ``NOT`` (a ``NOT`` chain ends at ``AND``/``OR`` of its level)."""
    stack: list[int] = []  # prefix operators open at each enclosing level
    outer = 0  # parentheses and prefix operators of the enclosing levels
    prefixes = 0  # prefix operators in the current level's chain
    deepest = 0
    for token in _cql2_tokens(text):
        upper = token.upper()
        if token == "(":
            stack.append(prefixes)
            outer += prefixes + 1
            prefixes = 0
        elif token == ")":
            if stack:
                prefixes = stack.pop()
                outer -= prefixes + 1
        elif upper in _PREFIX_WORDS:
            prefixes += 1
        elif upper in _CHAIN_BREAKS:
            prefixes = 0
        deepest = max(deepest, outer + prefixes)
    return deepest


def cql2_json_depth(value: Any) -> int:
    """Nesting depth of a CQL2 JSON expression: levels of ``{"op": ...}`` objects and arrays."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            here = depth + (1 if "op" in node else 0)
            deepest = max(deepest, here)
            todo.extend((v, here) for v in node.values())
        elif isinstance(node, list):
            todo.extend((v, depth) for v in node)
    return deepest


# ------------------------------------------------------------------------------ checks
def check_filter(value: Any, settings: ApiSettings, lang: str | None = None) -> None:
    """Refuse a filter longer or deeper than the settings allow (400)."""
    if isinstance(value, str) and (lang == "cql2-json" or value.lstrip().startswith("{")):
        check_text_size(value, settings.max_filter_chars, "filter")
        parsed = parse_json(value, settings.max_json_depth, "filter")
        return check_filter(parsed, settings)
    text = value if isinstance(value, str) else json.dumps(value)
    check_text_size(text, settings.max_filter_chars, "filter")
    depth = cql2_text_depth(value) if isinstance(value, str) else cql2_json_depth(value)
    if depth > settings.max_filter_depth:
        raise BoundError(
            400,
            "FilterTooDeep",
            f"the filter nests {depth} levels; at most {settings.max_filter_depth} are allowed "
            "(TESSERA_STAC_API_MAX_FILTER_DEPTH)",
        )


def check_text_size(text: str, limit: int, what: str) -> None:
    if len(text) > limit:
        raise BoundError(
            400,
            "FilterTooLong",
            f"the {what} has {len(text)} characters; at most {limit} are allowed "
            "(TESSERA_STAC_API_MAX_FILTER_CHARS)",
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, max_depth: int, what: str) -> Any:
    """Parse strict JSON (no NaN/Infinity, valid UTF-8 and Unicode), depth checked first."""
    depth = json_text_depth(text)
    if depth > max_depth:
        raise BoundError(
            400,
            "TooDeep",
            f"the {what} nests {depth} levels of JSON; at most {max_depth} are allowed "
            "(TESSERA_STAC_API_MAX_JSON_DEPTH)",
        )
    try:
        value = json.loads(text, parse_constant=_no_constant)
        # unpaired surrogates (e.g. "\ud800") parse but cannot be encoded (nor stored)
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeError as exc:
        raise BoundError(400, "InvalidUnicode", f"the {what} is not valid Unicode: {exc}") from None
    except ValueError as exc:
        raise BoundError(400, "InvalidJSON", f"the {what} is not valid JSON: {exc}") from None
    return value


def _finite(name: str, raw: str) -> None:
    for part in raw.split(","):
        try:
            number = float(part)
        except ValueError:
            continue  # not a number at all: the route's own validation answers
        if not math.isfinite(number):
            raise BoundError(400, "InvalidParameter", f"{name}={raw!r}: numbers must be finite")


def check_query(query: list[tuple[str, str]], settings: ApiSettings) -> bool:
    """Check query parameters in place; True when ``limit`` was capped (rewrite needed)."""
    params = dict(query)
    capped = False
    for i, (name, raw) in enumerate(query):
        if name in NUMERIC_PARAMS:
            _finite(name, raw)
        if name in JSON_PARAMS and raw:
            value = parse_json(unquote_plus(raw), settings.max_json_depth, f"{name} parameter")
            if not isinstance(value, dict):
                raise BoundError(400, "InvalidParameter", f"{name} must be a JSON object")
        if name == "filter" and raw:
            check_filter(raw, settings, params.get("filter-lang") or params.get("filter_lang"))
        if name == "limit" or name in MOSAIC_CAPS:
            try:
                limit = int(raw)
            except ValueError:
                continue
            if name in MOSAIC_CAPS and limit < 1:
                raise BoundError(400, "InvalidParameter", f"{name} must be at least 1")
            cap = settings.max_limit if name == "limit" else MOSAIC_CAPS[name](settings)
            if limit > cap:
                query[i] = (name, str(cap))
                capped = True
    return capped


def check_body(body: bytes, path: str, settings: ApiSettings) -> bytes | None:
    """Check a JSON body; returns a rewritten body when ``limit`` was capped, else None."""
    value = parse_json(body, settings.max_json_depth, "request body")
    if not isinstance(value, dict):
        raise BoundError(
            400, "InvalidBody", f"the request body must be a JSON object, not {_kind(value)}"
        )
    if "filter" in value and value["filter"] is not None:
        check_filter(value["filter"], settings, value.get("filter-lang"))
    limit = value.get("limit")
    if (
        path.endswith("/search")
        and isinstance(limit, int)
        and not isinstance(limit, bool)
        and limit > settings.max_limit
    ):
        value["limit"] = settings.max_limit
        return json.dumps(value).encode()
    return None


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number"
    )


# -------------------------------------------------------------------------- middleware
class BoundsMiddleware:
    """Apply the checks above before the app sees the request (JSON errors otherwise)."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            scope = self._check_query(scope)
            if scope["method"] in BODY_METHODS:
                body = await self._read_body(scope, receive)
                if body.strip():
                    rewritten = check_body(body, scope["path"], self.settings)
                    body = body if rewritten is None else rewritten
                    scope = _json_scope(scope, len(body))
                receive = _replay(body, receive)
        except BoundError as exc:
            await send_error(send, exc.status, exc.code, exc.description)
            return
        await self.app(scope, receive, send)

    def _check_query(self, scope: Scope) -> Scope:
        raw = scope.get("query_string", b"")
        if not raw:
            return scope
        if len(raw) > self.settings.max_query_chars:
            raise BoundError(
                414,
                "URITooLong",
                f"the query string is longer than {self.settings.max_query_chars} characters "
                "(TESSERA_STAC_API_MAX_QUERY_CHARS)",
            )
        query = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8")
        if check_query(query, self.settings):
            return {**scope, "query_string": urlencode(query).encode("latin-1")}
        return scope

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        too_big = BoundError(
            413,
            "PayloadTooLarge",
            f"the request body is larger than {limit} bytes (TESSERA_STAC_API_MAX_BODY_BYTES)",
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _json_scope(scope: Scope, length: int) -> Scope:
    """The scope with the (checked) body declared as JSON of its new length."""
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**scope, "headers": headers}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_error(
    send: Send, status: int, code: str, description: str, headers: dict[str, str] | None = None
) -> None:
    """Send the API's JSON error shape from ASGI code."""
    body = json.dumps({"code": code, "description": description}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------ /embeddings/area plan
def split_antimeridian(geometry: dict[str, Any]) -> dict[str, Any]:
    """A (Multi)Polygon whose edges jump more than 180° of longitude crosses the antimeridian
    (RFC 7946 §3.1.9 asks for it split, clients often do not): split it there. Edges of exactly
    360° (-180 to 180) are a polygon that spans the globe, kept as it is."""
    from shapely.affinity import translate
    from shapely.geometry import MultiPolygon, Polygon, box, mapping

    kind = geometry.get("type")
    polygons = geometry.get("coordinates") or []
    if kind == "Polygon":
        polygons = [polygons]
    pieces: list[Any] = []
    crossed = False
    for rings in polygons:
        exterior = rings[0] if rings else []
        jumps = [abs(float(b[0]) - float(a[0])) for a, b in itertools.pairwise(exterior)]
        if not any(180 < jump < 360 for jump in jumps):
            pieces.append(Polygon(rings[0], rings[1:]))
            continue
        crossed = True
        shifted = [[(x + 360 if x < 0 else x, y, *rest) for x, y, *rest in ring] for ring in rings]
        whole = Polygon(shifted[0], shifted[1:])
        pieces.append(whole.intersection(box(-180, -90, 180, 90)))
        pieces.append(translate(whole.intersection(box(180, -90, 540, 90)), xoff=-360))
    if not crossed:
        return geometry
    parts = [p for piece in pieces for p in _polygons(piece)]
    return dict(mapping(MultiPolygon(parts)))


def _polygons(geom: Any) -> list[Any]:
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    return [p for g in getattr(geom, "geoms", []) for p in _polygons(g)]


def _estimate_pixels(item: dict[str, Any], part: Any) -> int | None:
    """Pixels of the item's grid in the bounds of ``part`` (WGS84), from its metadata alone."""
    from pyproj import Transformer

    props = item.get("properties") or {}
    transform, shape, code = (props.get(k) for k in ("proj:transform", "proj:shape", "proj:code"))
    if not (transform and shape and code) or len(transform) < 6 or len(shape) < 2:
        return None
    a, _, c, _, e, f = (float(v) for v in transform[:6])
    to_grid = Transformer.from_crs("EPSG:4326", str(code), always_xy=True)
    west, south, east, north = part.bounds
    minx, miny, maxx, maxy = to_grid.transform_bounds(west, south, east, north, densify_pts=21)
    cols = max(0.0, min(shape[1], (maxx - c) / a + 3) - max(0.0, (minx - c) / a - 3))
    rows = max(0.0, min(shape[0], (f - miny) / -e + 3) - max(0.0, (f - maxy) / -e - 3))
    return int(math.ceil(cols) * math.ceil(rows))


def _pixels_at_10m(bounds: tuple[float, float, float, float]) -> int:
    west, south, east, north = bounds
    width_m = (east - west) * 111_320 * math.cos(math.radians((south + north) / 2))
    height_m = (north - south) * 110_574
    return int(math.ceil(abs(width_m) / 10) * math.ceil(abs(height_m) / 10))


def plan_area(
    items: list[dict[str, Any]], geometry: dict[str, Any], settings: ApiSettings
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """What ``/embeddings/area`` reads: per item, the geometry clipped to the item (so it
    reprojects into the item's UTM zone whatever its size) and cut into strips of about
    ``zonal_block_pixels`` pixels (memory per request stays bounded).

    Raises:
        BoundError: 413 when the pixels of all tiles together exceed ``zonal_max_pixels``, or
            the geometry meets more than ``zonal_max_tiles`` tiles.
    """
    from shapely.geometry import MultiPolygon, box, mapping, shape

    if len(items) > settings.zonal_max_tiles:
        raise BoundError(
            413,
            "AreaTooLarge",
            f"the geometry meets more than {settings.zonal_max_tiles} tiles "
            "(TESSERA_STAC_API_ZONAL_MAX_TILES)",
        )
    whole = shape(geometry)
    plan: list[tuple[dict[str, Any], Any, int]] = []
    total = 0
    for item in items:
        bbox = item.get("bbox") or [-180, -90, 180, 90]
        pad = 0.01  # degrees: the cell is inside the bbox; a margin for projection bulge
        part = whole.intersection(box(bbox[0] - pad, bbox[1] - pad, bbox[2] + pad, bbox[3] + pad))
        if part.is_empty or not _polygons(part):
            continue
        try:
            pixels = _estimate_pixels(item, part)
        except Exception as exc:  # pyproj: a CRS or bounds it cannot handle
            raise BoundError(
                422, "InvalidGeometry", f"cannot project the geometry to {item.get('id')}: {exc}"
            ) from None
        if pixels is None:  # no grid in the metadata: 10 m pixels over the part's bounds
            pixels = _pixels_at_10m(part.bounds)
        total += pixels
        plan.append((item, part, pixels))
    if total > settings.zonal_max_pixels:
        raise BoundError(
            413,
            "AreaTooLarge",
            f"the geometry covers about {total} pixels; the budget is "
            f"{settings.zonal_max_pixels} per request (TESSERA_STAC_API_ZONAL_MAX_PIXELS)",
        )
    out: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for item, part, pixels in plan:
        strips = max(1, math.ceil(pixels / max(1, settings.zonal_block_pixels)))
        west, south, east, north = part.bounds
        step = (north - south) / strips
        geoms = []
        for k in range(strips):
            low = south - 1e-9 if k == 0 else south + k * step
            high = north + 1e-9 if k == strips - 1 else south + (k + 1) * step
            strip = part if strips == 1 else part.intersection(box(west, low, east, high))
            polys = _polygons(strip)
            if polys:
                geoms.append(dict(mapping(MultiPolygon(polys))))
        out.append((item, geoms))
    return out

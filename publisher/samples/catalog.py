"""Synthetic STAC catalogues for scale tests: N items over real 0.1° land cells, no rasters.

Each item is what the real item builder (:func:`tessera_stac.catalog.stac.create_item`) makes of a
synthetic :class:`~tessera_stac.catalog.model.PublishedTile`: the real cell geometry, the UTM zone
of DESIGN §1, the georeferencing rebuilt by its corner rule (shape and transform), one item per
(cell, year), assets with plausible sizes and checksums, and the same properties and extension
fields as a published item.

Cells are the land cells nearest to a centre point (central India by default), so a catalogue of
any size is spatially dense like the real one: a 0.5° block holds ~25 items per year whether the
catalogue has 10 k or 10 M items.

Two renderers produce identical JSON:

* exact: ``create_item(tile).to_dict()`` per item (~1.6 k items/s of 6 kB items here);
* fast (default): ``create_item`` runs once per (year, UTM zone) to make a text template whose
  per-tile values are substituted per item (~13 k items/s here, 8x). Before streaming, the
  fast renderer is checked against the exact one on a sample of items; if they disagree (the
  item builder grew a field this module does not know how to fill), it warns and falls back to
  the exact renderer.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import AssetRecord, GridCell, PixelCounts, PublishedTile
from tessera_stac.catalog.profile import (
    EMBEDDINGS,
    PREVIEW_FILENAME,
    PREVIEW_KEY,
    PREVIEW_MEDIA_TYPE,
    SCALES,
)
from tessera_stac.publisher.samples.items import fake_tile
from tessera_stac.publisher.samples.landmask import LAND_0P5_B64, LAND_RES_DEG, LAND_SHAPE

PIXEL_SIZE = 10.0
DEFAULT_YEARS = tuple(range(2017, 2026))
DEFAULT_CENTRE = (78.95, 22.55)  # central India
DEFAULT_PROCESSED = datetime(2026, 1, 1, tzinfo=UTC)
_CELLS_PER_LAND_SQUARE = round(LAND_RES_DEG / 0.1)


@dataclass(frozen=True)
class SyntheticSpec:
    """What synthetic catalogue to make.

    Attributes:
        n_items: number of items (cells x years, year-major, the last year may be partial).
        years: years of the items.
        centre: (lon, lat) the cells grow around (nearest land cells first).
        bbox: optional (west, south, east, north) the cells must lie in.
        collection_id: collection of every item.
        model_name: embedding model name.
        model_version: embedding model version.
        href_base: prefix of asset hrefs (``{base}/{collection}/{year}/{grid}/...``).
        source_base: prefix of the source file hrefs (public-mirror layout).
        processed: processing time recorded in every item (pure: no clock).
        seed: seed of the random sizes, pixel counts and checksums.
    """

    n_items: int
    years: tuple[int, ...] = DEFAULT_YEARS
    centre: tuple[float, float] = DEFAULT_CENTRE
    bbox: tuple[float, float, float, float] | None = None
    collection_id: str = "tessera-embeddings-v1"
    model_name: str = "TESSERA"
    model_version: str = "v1"
    href_base: str = "s3://tessera-stac"
    source_base: str = "s3://tessera-mirror/npy/v1"
    processed: datetime = DEFAULT_PROCESSED
    seed: int = 0
    software: dict[str, str] = field(default_factory=lambda: {"tessera-stac": "synthetic"})

    @property
    def n_cells(self) -> int:
        """Number of distinct cells the items need."""
        return math.ceil(self.n_items / len(self.years)) if self.years else 0


# ------------------------------------------------------------------------------ land cells
def _land_mask() -> NDArray[np.bool_]:
    packed = np.frombuffer(zlib.decompress(base64.b64decode("".join(LAND_0P5_B64))), np.uint8)
    bits = np.unpackbits(packed)[: LAND_SHAPE[0] * LAND_SHAPE[1]]
    return bits.reshape(LAND_SHAPE).astype(bool)


def build_land_mask(shapefile: Path) -> str:
    """Rasterise land polygons to the 0.5° mask format of ``synthetic_landmask`` (base64 text).

    How ``LAND_0P5_B64`` was made, from pyogrio's bundled ``naturalearth_lowres`` layer.
    """
    import pyogrio
    import rasterio.features
    from rasterio.transform import from_origin

    frame = pyogrio.read_dataframe(shapefile)
    height, width = LAND_SHAPE
    mask = rasterio.features.rasterize(
        ((geom, 1) for geom in frame.geometry if geom is not None),
        out_shape=(height, width),
        transform=from_origin(-180, 90, LAND_RES_DEG, LAND_RES_DEG),
        all_touched=True,
        dtype="uint8",
    )
    lat = 90 - (np.arange(height) + 0.5) * LAND_RES_DEG
    mask[lat < -60, :] = 0
    packed = np.packbits(mask.astype(bool), axis=None)
    return base64.b64encode(zlib.compress(packed.tobytes(), 9)).decode()


def land_cells(
    bbox: tuple[float, float, float, float] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Centres (lon, lat) of every 0.1° cell on land (by the coarse mask), optionally in a bbox."""
    rows, cols = np.nonzero(_land_mask())
    k = _CELLS_PER_LAND_SQUARE
    sub = np.arange(k)
    # cell indices on the global 0.1° grid: column i -> centre lon -180 + 0.1 i + 0.05
    ci = (cols[:, None, None] * k + sub[None, None, :]).repeat(k, axis=1).ravel()
    ri = (rows[:, None, None] * k + sub[None, :, None]).repeat(k, axis=2).ravel()
    lon = np.round(-180 + 0.1 * ci + 0.05, 2)
    lat = np.round(90 - 0.1 * ri - 0.05, 2)
    if bbox is not None:
        west, south, east, north = bbox
        keep = (lon > west) & (lon < east) & (lat > south) & (lat < north)
        lon, lat = lon[keep], lat[keep]
    return lon, lat


def select_cells(spec: SyntheticSpec) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The ``spec.n_cells`` land cells nearest to ``spec.centre``, sorted by (lon, lat).

    Raises:
        InputError: when the region holds fewer land cells than the catalogue needs.
    """
    lon, lat = land_cells(spec.bbox)
    need = spec.n_cells
    if need > lon.size:
        raise InputError(
            f"{spec.n_items} items over {len(spec.years)} years need {need} cells, but the "
            f"region has only {lon.size} land cells: add years, widen --bbox or ask for fewer"
        )
    c_lon, c_lat = spec.centre
    dx = (lon - c_lon) * math.cos(math.radians(c_lat))
    dist = dx * dx + (lat - c_lat) ** 2
    idx = np.argpartition(dist, need - 1)[:need] if need < lon.size else np.arange(lon.size)
    order = np.lexsort((lat[idx], lon[idx]))
    return lon[idx][order], lat[idx][order]


# ------------------------------------------------------------------------- georeferencing
def utm_epsg(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.int64]:
    """EPSG code of the UTM zone of each cell centre (DESIGN §1; no Norway/Svalbard rule)."""
    zone = np.clip(np.floor((lon + 180) / 6).astype(np.int64) + 1, 1, 60)
    return np.where(lat >= 0, 32600, 32700) + zone


def rebuild_georef(
    lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Vectorised georeferencing rebuilt from cell centres (the rule of DESIGN §1).

    Project the 4 corners into the centre's UTM zone; origin = (min easting of the left corners,
    max northing of the top corners); width/height = round(extent / 10 m).

    Returns:
        (epsg (n,), transform (n, 6) as affine a, b, c, d, e, f, shape (n, 2) as height, width).
    """
    from pyproj import Transformer

    epsg = utm_epsg(lon, lat)
    transform = np.zeros((lon.size, 6))
    shape = np.zeros((lon.size, 2), dtype=np.int64)
    for code in np.unique(epsg):
        sel = np.nonzero(epsg == code)[0]
        to_utm = Transformer.from_crs(4326, int(code), always_xy=True)
        w, e = lon[sel] - 0.05, lon[sel] + 0.05
        s, n = lat[sel] - 0.05, lat[sel] + 0.05
        x_nw, y_nw = to_utm.transform(w, n)
        x_sw, y_sw = to_utm.transform(w, s)
        x_ne, y_ne = to_utm.transform(e, n)
        x_se, y_se = to_utm.transform(e, s)
        x0 = np.minimum(x_nw, x_sw)
        y0 = np.maximum(y_nw, y_ne)
        width = np.rint((np.maximum(x_ne, x_se) - x0) / PIXEL_SIZE).astype(np.int64)
        height = np.rint((y0 - np.minimum(y_sw, y_se)) / PIXEL_SIZE).astype(np.int64)
        zero, step = np.zeros(sel.size), np.full(sel.size, PIXEL_SIZE)
        transform[sel] = np.column_stack([step, zero, x0, zero, -step, y0])
        shape[sel, 0], shape[sel, 1] = height, width
    return epsg, transform, shape


# ----------------------------------------------------------------------------- the tiles
@dataclass(frozen=True)
class _Columns:
    """Per-cell values of a catalogue, as plain Python lists (fast to index in loops)."""

    lon: list[float]
    lat: list[float]
    epsg: list[int]
    transform: list[list[float]]
    shape: list[list[int]]
    valid_fraction: list[float]
    water_fraction: list[float]
    size_factor: list[float]


def _columns(spec: SyntheticSpec) -> _Columns:
    lon, lat = select_cells(spec)
    epsg, transform, shape = rebuild_georef(lon, lat)
    rng = np.random.default_rng(spec.seed)
    n = lon.size
    water = np.where(rng.random(n) < 0.8, 0.0, rng.beta(1.2, 3.0, n))
    valid = (1 - water) * rng.uniform(0.95, 1.0, n)
    return _Columns(
        lon=lon.tolist(),
        lat=lat.tolist(),
        epsg=epsg.tolist(),
        transform=transform.tolist(),
        shape=shape.tolist(),
        valid_fraction=valid.tolist(),
        water_fraction=water.tolist(),
        size_factor=rng.uniform(0.55, 0.75, n).tolist(),
    )


def _checksum(*parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return "1220" + digest


class _Cell(GridCell):
    """A GridCell that formats its name and bounds once (they are read many times per item)."""

    @functools.cached_property
    def name(self) -> str:
        return super().name

    @functools.cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        return super().bounds


def _tile(
    spec: SyntheticSpec, cols: _Columns, i: int, year: int, cell: GridCell | None = None
) -> PublishedTile:
    cell = cell or _Cell(cols.lon[i], cols.lat[i])
    height, width = cols.shape[i]
    pixels = height * width
    water = round(pixels * cols.water_fraction[i])
    valid = min(round(pixels * cols.valid_fraction[i]), pixels - water)
    sanitised = (pixels - water - valid) // 3
    folder = f"{spec.href_base.rstrip('/')}/{spec.collection_id}/{year}/{cell.name}"
    factor = cols.size_factor[i] * (valid / pixels if pixels else 0.0)
    sizes = {
        EMBEDDINGS.asset_key: int(pixels * EMBEDDINGS.count * factor) + 4096,
        SCALES.asset_key: int(pixels * 4 * factor * 0.5) + 4096,
        PREVIEW_KEY: int(pixels * 0.3 * factor) + 1024,
    }
    files = {
        EMBEDDINGS.asset_key: (EMBEDDINGS.filename, EMBEDDINGS.media_type, EMBEDDINGS.roles),
        SCALES.asset_key: (SCALES.filename, SCALES.media_type, SCALES.roles),
        PREVIEW_KEY: (PREVIEW_FILENAME, PREVIEW_MEDIA_TYPE, ("overview", "visual")),
    }
    assets = {
        key: AssetRecord(
            key=key,
            href=f"{folder}/{name}",
            media_type=media,
            size=sizes[key],
            checksum=_checksum(spec.seed, cell.name, year, key),
            roles=roles,
        )
        for key, (name, media, roles) in files.items()
    }
    src = f"{spec.source_base.rstrip('/')}/{year}/{cell.name}/{cell.name}"
    a, b, c, d, e, f = cols.transform[i]
    return fake_tile(
        cell,
        year,
        collection_id=spec.collection_id,
        model_name=spec.model_name,
        model_version=spec.model_version,
        grid=(cols.epsg[i], (a, b, c, d, e, f), (height, width)),
        assets=assets,
        sources=(f"{src}.npy", f"{src}_scales.npy"),
        counts=PixelCounts(valid=valid, invalid=pixels - valid, sanitised=sanitised, water=water),
        processed=spec.processed,
        software=spec.software,
        georef_from="rebuilt",
    )


def _order(spec: SyntheticSpec, n_cells: int) -> Iterator[tuple[int, int]]:
    """(cell index, year) of every item: year-major, as a publisher run per year writes them."""
    emitted = 0
    for year in spec.years:
        for i in range(n_cells):
            if emitted >= spec.n_items:
                return
            yield i, year
            emitted += 1


def synthetic_tiles(spec: SyntheticSpec) -> Iterator[PublishedTile]:
    """Stream the synthetic :class:`PublishedTile` records of a catalogue (no I/O)."""
    cols = _columns(spec)
    cells: dict[int, GridCell] = {}  # a cell's formatted name/bounds are reused across years
    for i, year in _order(spec, len(cols.lon)):
        cell = cells.get(i)
        if cell is None:
            cell = cells[i] = _Cell(cols.lon[i], cols.lat[i])
        yield _tile(spec, cols, i, year, cell)


def exact_item(tile: PublishedTile) -> dict[str, Any]:
    """The item dict the real builder makes of ``tile``."""
    from tessera_stac.catalog.stac import create_item

    return create_item(tile).to_dict(include_self_link=False, transform_hrefs=False)


# ------------------------------------------------------------------------ fast rendering
_TOKEN = "@@tessera-synthetic-{}@@"
_TOKEN_RE = re.compile(r'"@@tessera-synthetic-(\d+)@@"')
Formatter = Callable[[PublishedTile], str]


def _jf(x: float) -> str:
    """A float as JSON writes it (``json.dumps`` uses ``float.__repr__``)."""
    return repr(float(x)) if x == x and x not in (math.inf, -math.inf) else json.dumps(x)


def _geometry(t: PublishedTile) -> str:
    w, s, e, n = t.cell.bounds
    w_, s_, e_, n_ = _jf(w), _jf(s), _jf(e), _jf(n)
    ring = f"[[{w_},{s_}],[{e_},{s_}],[{e_},{n_}],[{w_},{n_}],[{w_},{s_}]]"
    return f'{{"type":"Polygon","coordinates":[{ring}]}}'


def _bbox(t: PublishedTile) -> str:
    return "[" + ",".join(_jf(v) for v in t.cell.bounds) + "]"


def _proj_bbox(t: PublishedTile) -> list[float]:
    a, _, c, _, e, f = t.transform
    height, width = t.shape
    return [c, f + e * height, c + a * width, f]


def _known_paths() -> dict[tuple[str, ...], Formatter]:
    known: dict[tuple[str, ...], Formatter] = {
        ("id",): lambda t: json.dumps(t.item_id),
        ("geometry",): _geometry,
        ("bbox",): _bbox,
        ("properties", "proj:code"): lambda t: f'"EPSG:{t.epsg}"',
        ("properties", "proj:epsg"): lambda t: str(int(t.epsg)),
        ("properties", "proj:shape"): lambda t: f"[{t.shape[0]},{t.shape[1]}]",
        ("properties", "proj:transform"): lambda t: "[" + ",".join(map(_jf, t.transform)) + "]",
        ("properties", "proj:bbox"): lambda t: "[" + ",".join(map(_jf, _proj_bbox(t))) + "]",
    }
    return known


def _asset_formatter(key: str, attr: str) -> Formatter:
    if attr == "href":
        return lambda t: json.dumps(t.assets[key].href)
    if attr == "file:size":
        return lambda t: str(t.assets[key].size)
    return lambda t: json.dumps(t.assets[key].checksum)


def _scalar_rules(t0: PublishedTile) -> list[tuple[float, Callable[[PublishedTile], float]]]:
    """Per-tile numbers a builder may copy into an item, as (value in t0, getter)."""
    c = t0.counts
    getters: list[Callable[[PublishedTile], float]] = [
        lambda t: t.counts.valid,
        lambda t: t.counts.invalid,
        lambda t: t.counts.total,
    ]
    if c.water:
        getters.append(lambda t: t.counts.water)
    if c.sanitised:
        getters.append(lambda t: t.counts.sanitised)
    rules = [(float(g(t0)), g) for g in getters]
    for digits in (2, 3, 4, 5, 6, None):
        rules.append(
            (
                _round(c.valid / c.total, digits),
                lambda t, d=digits: _round(t.counts.valid / t.counts.total, d),  # type: ignore[misc]
            )
        )
    return rules


def _round(x: float, digits: int | None) -> float:
    return x if digits is None else round(x, digits)


def _string_atoms(t0: PublishedTile) -> list[tuple[str, Callable[[PublishedTile], str]]]:
    """Per-tile values a builder may write inside strings (titles, lineage, hrefs)."""
    atoms: list[tuple[str, Callable[[PublishedTile], str]]] = [
        (t0.cell.name, lambda t: t.cell.name),
        (str(t0.counts.valid), lambda t: str(t.counts.valid)),
        (str(t0.counts.invalid), lambda t: str(t.counts.invalid)),
    ]
    return sorted(atoms, key=lambda a: -len(a[0]))  # longest first


def _string_formatter(
    text: str, atoms: list[tuple[str, Callable[[PublishedTile], str]]]
) -> Formatter | None:
    """A formatter re-making ``text`` with each tile's atoms, or None when it holds none."""
    present = [(value, get) for value, get in atoms if value in text]
    if not present:
        return None
    pattern = re.compile("|".join(re.escape(value) for value, _ in present))
    getters = dict(present)
    pieces: list[str | Callable[[PublishedTile], str]] = []
    pos = 0
    for match in pattern.finditer(text):
        pieces.append(text[pos : match.start()])
        pieces.append(getters[match.group(0)])
        pos = match.end()
    pieces.append(text[pos:])

    def fmt(t: PublishedTile) -> str:
        return json.dumps("".join(p if isinstance(p, str) else p(t) for p in pieces))

    return fmt


def _number(getter: Callable[[PublishedTile], float], as_int: bool) -> Formatter:
    if as_int:
        return lambda t: json.dumps(int(getter(t)))
    return lambda t: json.dumps(float(getter(t)))


class _Template:
    """An item's JSON text with the per-tile values cut out, for one (year, UTM zone)."""

    def __init__(self, t0: PublishedTile) -> None:
        doc = exact_item(t0)
        self.formatters: list[Formatter] = []
        known = _known_paths()
        scalars = _scalar_rules(t0)
        atoms = _string_atoms(t0)

        def token(fmt: Formatter) -> str:
            self.formatters.append(fmt)
            return _TOKEN.format(len(self.formatters) - 1)

        def walk(node: Any, path: tuple[str, ...]) -> Any:
            if path in known:
                return token(known[path])
            if (
                len(path) == 3
                and path[0] == "assets"
                and path[2] in ("href", "file:size", "file:checksum")
            ):
                return token(_asset_formatter(path[1], path[2]))
            if isinstance(node, dict):
                return {k: walk(v, (*path, k)) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v, (*path, str(i))) for i, v in enumerate(node)]
            if isinstance(node, str):
                fmt = _string_formatter(node, atoms)
                if fmt is not None:
                    return token(fmt)
            if isinstance(node, int | float) and not isinstance(node, bool) and abs(node) > 1:
                for value, getter in scalars:
                    if node == value:
                        return token(_number(getter, as_int=isinstance(node, int)))
            return node

        text = json.dumps(walk(doc, ()), separators=(",", ":"))
        parts = _TOKEN_RE.split(text)
        self.literals: list[str] = parts[0::2]
        self.slots: list[int] = [int(p) for p in parts[1::2]]

    def render(self, tile: PublishedTile) -> str:
        """The item's JSON text for ``tile`` (one line)."""
        out = [self.literals[0]]
        fmts = self.formatters
        for slot, literal in zip(self.slots, self.literals[1:], strict=True):
            out.append(fmts[slot](tile))
            out.append(literal)
        return "".join(out)


class FastRenderer:
    """Renders items from per-(year, zone) templates built with the real item builder."""

    def __init__(self) -> None:
        self._templates: dict[tuple[int, int], _Template] = {}

    def render(self, tile: PublishedTile) -> str:
        """One item as a JSON line (no newline)."""
        key = (tile.year, tile.epsg)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = _Template(tile)
        return template.render(tile)


def _sample_indices(n: int, k: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed + 1)
    return sorted({0, n - 1, *rng.integers(0, max(n, 1), size=min(k, n)).tolist()})


def fast_renderer_mismatch(spec: SyntheticSpec, sample: int = 64) -> str | None:
    """Compare the fast renderer with the real builder on a sample; describe a difference.

    Returns:
        None when every sampled item is identical, else where the first difference is.
    """
    probe = replace(spec, n_items=min(spec.n_items, 4096))
    tiles = list(synthetic_tiles(probe))
    if not tiles:
        return None
    renderer = FastRenderer()
    # build templates from the first tile of each group, then check others of the same group
    for i in _sample_indices(len(tiles), sample, spec.seed):
        tile = tiles[i]
        fast = json.loads(renderer.render(tile))
        exact = json.loads(json.dumps(exact_item(tile)))
        if fast != exact:
            return f"item {tile.item_id}: {_first_difference(exact, fast, '')}"
    return None


def _first_difference(a: Any, b: Any, path: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key, ...) != b.get(key, ...):
                return _first_difference(a.get(key), b.get(key), f"{path}/{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}/{i}")
    return f"{path or '/'}: builder {a!r} != fast {b!r}"


def iter_ndjson(spec: SyntheticSpec, fast: bool = True) -> Iterator[str]:
    """Stream the catalogue's items as JSON lines (each ends with a newline).

    Args:
        spec: what to make.
        fast: use the template renderer (checked against the builder first; falls back to the
            builder with a warning when they disagree).
    """
    if fast:
        problem = fast_renderer_mismatch(spec)
        if problem:
            warnings.warn(
                f"fast synthetic renderer disagrees with create_item ({problem}); "
                "using the builder for every item (slower)",
                stacklevel=2,
            )
            fast = False
    if fast:
        renderer = FastRenderer()
        for tile in synthetic_tiles(spec):
            yield renderer.render(tile) + "\n"
    else:
        for tile in synthetic_tiles(spec):
            yield json.dumps(exact_item(tile), separators=(",", ":")) + "\n"


def write_ndjson(
    spec: SyntheticSpec,
    out: Path,
    fast: bool = True,
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 10_000,
) -> int:
    """Write the catalogue to ``out`` as NDJSON (temp file + rename); return the item count.

    ``on_progress(n)`` is called with the number of items written since the last call.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            buffer: list[str] = []
            for line in iter_ndjson(spec, fast=fast):
                buffer.append(line)
                if len(buffer) >= chunk:
                    fh.write("".join(buffer))
                    count += len(buffer)
                    if on_progress:
                        on_progress(len(buffer))
                    buffer.clear()
            fh.write("".join(buffer))
            count += len(buffer)
            if on_progress and buffer:
                on_progress(len(buffer))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def floats_from_text(text: str, n: int, what: str) -> Sequence[float]:
    """Parse ``n`` comma-separated floats (e.g. a bbox); raises InputError naming ``what``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise InputError(f"{what} must be {n} comma-separated numbers: {text!r}")
    return values

"""The embeddings under labels and the tiles to map, read from a published static catalog.

No database: the embedding items of a year are listed in the store (a folder or S3,
``{collection}/{year}/{grid}/{item}.json``), and every pixel is read through the reader kernel
(``catalog.reader``: :func:`read_points` for points, :func:`iter_polygon_pixels` for
polygons, whose pixels are sampled with a bound).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.reader import (
    ItemRecipe,
    dequantize_pixels,
    gdal_path,
    iter_polygon_pixels,
    open_raster,
    polygon_window,
    rasterio_env,
    read_points,
)
from tessera_stac.catalog.static import ITEM_KEY_RE
from tessera_stac.catalog.store import LocalStore, S3Store

#: pixels a polygon's window may span (a label covering a whole district is refused)
MAX_POLYGON_WINDOW = 4_000_000
MAX_PIXELS_PER_POLYGON = 200
MAX_POLYGON_PIXELS = 50_000


@dataclass(frozen=True)
class CatalogItem:
    """One published embedding item: its key, href (for GDAL and relative assets) and JSON."""

    key: str
    href: str
    collection: str
    year: int
    cell: GridCell
    item: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.item["id"])


def item_href(store: LocalStore | S3Store, key: str) -> str:
    """An href of an object in the store that GDAL and the href resolver understand."""
    if isinstance(store, LocalStore):
        return str((store.root / key).resolve())
    return store.join(key)


def embedding_collections(store: LocalStore | S3Store) -> list[str]:
    """Embedding collections present in the store (``tessera-embeddings-*`` folders)."""
    return sorted(f for f in store.folders() if f.startswith(c.EMBEDDING_COLLECTION_PREFIX))


def choose_collection(store: LocalStore | S3Store, collection: str | None) -> str:
    """The embedding collection to read: ``collection``, or the only one present.

    Raises:
        InputError: none is published, the one named is missing, or several are and none
            was named.
    """
    found = embedding_collections(store)
    if collection is not None:
        if collection not in found:
            raise InputError(
                f"{store.uri}: no embedding collection {collection!r} "
                f"(found: {', '.join(found) or 'none'})"
            )
        return collection
    if not found:
        raise InputError(f"{store.uri}: no published embeddings (tessera-stac publish first)")
    if len(found) > 1:
        raise InputError(
            f"{store.uri}: several embedding collections ({', '.join(found)}); "
            "choose one with --collection"
        )
    return found[0]


def list_items(store: LocalStore | S3Store, collection: str, year: int) -> list[CatalogItem]:
    """The embedding items of ``collection`` and ``year`` in the store, sorted by key."""
    out: list[CatalogItem] = []
    for key in sorted(store.list(f"{collection}/{year}/")):
        match = ITEM_KEY_RE.match(key)
        if not match or match["collection"] != collection or int(match["year"]) != year:
            continue
        try:
            item = json.loads(store.read_bytes(key))
            cell = GridCell.parse(match["grid"])
        except ValueError:
            continue
        if not isinstance(item, dict) or item.get("type") != "Feature":
            continue
        out.append(CatalogItem(key, item_href(store, key), collection, year, cell, item))
    return out


@contextlib.contextmanager
def open_item(entry: CatalogItem, gdal_env: dict[str, str] | None) -> Iterator[tuple[Any, ...]]:
    """(recipe, codes dataset, scales dataset or None) of an item, opened for reads."""
    recipe = ItemRecipe.of(entry.item, self_href=entry.href)
    with rasterio_env(gdal_env), contextlib.ExitStack() as stack:
        codes = stack.enter_context(open_raster(gdal_path(recipe.codes_href), recipe.codes_href))
        scales = None
        if recipe.scale_href is not None:
            scales = stack.enter_context(
                open_raster(gdal_path(recipe.scale_href), recipe.scale_href)
            )
        yield recipe, codes, scales


@dataclass
class Samples:
    """Vectors under the labels.

    Attributes:
        vectors: (n, 128) float32 dequantised vectors.
        label: (n,) index of the label each vector came from (a polygon gives several).
        lonlat: (n, 2) WGS84 pixel centres.
        items: ids of the embedding items read.
        invalid: indices of labels whose pixel holds no valid embedding (water, nodata).
        polygons: how many polygon labels were sampled, and their pixels.
    """

    vectors: np.ndarray
    label: np.ndarray
    lonlat: np.ndarray
    items: list[str] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    polygons: int = 0
    polygon_pixels: int = 0


def _cells_of(geometry: dict[str, Any]) -> list[GridCell]:
    from shapely.geometry import shape

    if geometry["type"] == "Point":
        lon, lat = geometry["coordinates"][:2]
        return [GridCell.containing(float(lon), float(lat))]
    west, south, east, north = shape(geometry).bounds
    ix0, iy0 = math.floor(west * 10), math.floor(south * 10)
    ix1, iy1 = math.floor(east * 10), math.floor(north * 10)
    return [
        GridCell(round(ix / 10 + 0.05, 2), round(iy / 10 + 0.05, 2))
        for ix in range(ix0, ix1 + 1)
        for iy in range(iy0, iy1 + 1)
    ]


def read_label_vectors(
    items: Sequence[CatalogItem],
    geometries: Sequence[dict[str, Any]],
    gdal_env: dict[str, str] | None = None,
    seed: int = 0,
    max_pixels_per_polygon: int = MAX_PIXELS_PER_POLYGON,
) -> Samples:
    """The dequantised vectors under every label, through the reader kernel.

    A point reads the pixel under it in the tile whose 0.1° cell holds it; a polygon, a
    sample of at most ``max_pixels_per_polygon`` valid pixels whose centre is inside it (each
    pixel from the tile whose cell holds its centre, as the join counts them).

    Raises:
        InputError: labels lie off the published tiles (none of their cells is published),
            or a polygon is too large.
    """
    by_cell = {entry.cell.name: entry for entry in items}
    points: dict[str, list[int]] = defaultdict(list)
    polygons: dict[str, list[int]] = defaultdict(list)
    off: list[int] = []
    for i, geometry in enumerate(geometries):
        cells = [cell.name for cell in _cells_of(geometry) if cell.name in by_cell]
        if not cells:
            off.append(i)
            continue
        target = points if geometry["type"] == "Point" else polygons
        for name in cells:
            target[name].append(i)
    if off:
        first = geometries[off[0]]
        raise InputError(
            f"{len(off)} of {len(geometries)} labels lie off the published tiles of this year "
            f"(first: label {off[0]}, {_where(first)}); remove them or publish those tiles"
        )
    vectors: list[np.ndarray] = []
    label: list[np.ndarray] = []
    lonlat: list[np.ndarray] = []
    used: set[str] = set()
    valid_labels: set[int] = set()
    polygon_pixels = 0
    rng = np.random.default_rng(seed)
    for name in sorted(set(points) | set(polygons)):
        entry = by_cell[name]
        used.add(entry.id)
        with open_item(entry, gdal_env) as (recipe, codes, scales):
            idx = points.get(name, [])
            if idx:
                coords = np.array([geometries[i]["coordinates"][:2] for i in idx], dtype=float)
                batch = read_points(
                    codes,
                    scales,
                    recipe.quantization,
                    coords[:, 0],
                    coords[:, 1],
                    recipe.scale_band,
                )
                ok = np.flatnonzero(batch.valid)
                vectors.append(batch.vectors[ok].astype(np.float32))
                label.append(np.asarray(idx, dtype=np.int64)[ok])
                lonlat.append(coords[ok])
                valid_labels.update(int(idx[k]) for k in ok)
            for i in polygons.get(name, []):
                got = _polygon_sample(
                    recipe, codes, scales, geometries[i], entry.cell, rng, max_pixels_per_polygon
                )
                if got is None:
                    continue
                v, ll = got
                polygon_pixels += len(v)
                if polygon_pixels > MAX_POLYGON_PIXELS:
                    raise InputError(
                        f"polygon labels sample more than {MAX_POLYGON_PIXELS} pixels; use fewer "
                        "polygons or points"
                    )
                vectors.append(v)
                label.append(np.full(len(v), i, dtype=np.int64))
                lonlat.append(ll)
                valid_labels.add(i)
    invalid = sorted(set(range(len(geometries))) - valid_labels)
    return Samples(
        vectors=np.concatenate(vectors) if vectors else np.zeros((0, c.EMBEDDING_DIM), np.float32),
        label=np.concatenate(label) if label else np.zeros(0, np.int64),
        lonlat=np.concatenate(lonlat) if lonlat else np.zeros((0, 2)),
        items=sorted(used),
        invalid=invalid,
        polygons=sum(1 for g in geometries if g["type"] != "Point"),
        polygon_pixels=polygon_pixels,
    )


def _where(geometry: dict[str, Any]) -> str:
    from shapely.geometry import shape

    x, y = shape(geometry).representative_point().coords[0]
    return f"near lon {x:.5f}, lat {y:.5f}"


def _polygon_sample(
    recipe: ItemRecipe,
    codes: Any,
    scales: Any,
    geometry: dict[str, Any],
    cell: GridCell,
    rng: np.random.Generator,
    limit: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """At most ``limit`` valid pixels of a polygon in one tile: vectors and lon/lat."""
    from tessera_stac.catalog.reader import pixel_centres
    from tessera_stac.catalog.reader.blocks import transformer

    window = polygon_window(codes, geometry)
    if window is None:
        return None
    r0, r1, c0, c1 = window
    if (r1 - r0) * (c1 - c0) > MAX_POLYGON_WINDOW:
        raise InputError(
            f"a polygon label spans more than {MAX_POLYGON_WINDOW} pixels ({_where(geometry)}); "
            "split it or use points"
        )
    kept_codes: list[np.ndarray] = []
    kept_scales: list[np.ndarray] = []
    kept_rc: list[np.ndarray] = []
    for px in iter_polygon_pixels(
        codes, scales, recipe.quantization, geometry, cell, window, recipe.scale_band
    ):
        ok = np.flatnonzero(px.valid)
        if len(ok) > limit:  # a strip never keeps more than the polygon may give
            ok = np.sort(rng.choice(ok, size=limit, replace=False))
        kept_codes.append(px.codes[ok])
        if px.scales is not None:
            kept_scales.append(px.scales[ok])
        kept_rc.append(np.stack([px.rows[ok], px.cols[ok]], axis=1))
    if not kept_codes or sum(len(k) for k in kept_codes) == 0:
        return None
    all_codes = np.concatenate(kept_codes)
    all_scales = np.concatenate(kept_scales) if kept_scales else None
    rc = np.concatenate(kept_rc)
    if len(all_codes) > limit:
        pick = np.sort(rng.choice(len(all_codes), size=limit, replace=False))
        all_codes, rc = all_codes[pick], rc[pick]
        all_scales = None if all_scales is None else all_scales[pick]
    values, valid = dequantize_pixels(all_codes, all_scales, recipe.quantization)
    xs, ys = pixel_centres(codes.transform, rc[:, 0], rc[:, 1])
    lon, lat = transformer(codes.crs.to_string(), "EPSG:4326").transform(xs, ys)
    return values[valid].astype(np.float32), np.stack([lon, lat], axis=1)[valid]

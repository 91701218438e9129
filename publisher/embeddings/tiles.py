"""Finding and reading TESSERA tiles in the layouts they are distributed in.

Layouts (each from a local directory or ``s3://bucket/prefix``):

* ``geotessera`` - geotessera's local cache::

      global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y.npy (+ grid_X_Y_scales.npy)
      global_0.1_degree_tiff_all/grid_X_Y.tiff

* ``mirror`` - the public mirror::

      npy/{dataset}/{year}/grid_X_Y/grid_X_Y.npy (+ _scales.npy)
      landmasks/{version}/grid_X_Y.tiff
      npy/{dataset}/manifest.parquet   (optional index: version, variant, lon, lat, year,
                                        grid_path, scales_path, ...)

* ``list`` - explicit ``.npy`` files; scales are the sibling ``*_scales.npy``, the year is the
  folder above the grid folder (or given), landmasks are looked up in a folder (optional).

Discovery never fails because of one bad tile: problems (unparsable names, missing scales...)
surface when that tile is read, as a per-tile error naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from tessera_stac.catalog.constants import EMBEDDING_DIM
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.store import LocalStore, S3Store, fetch, open_store
from tessera_stac.catalog.store_settings import StorageSettings
from tessera_stac.publisher.embeddings.georef import (
    TileGeoref,
    check_matches,
    read_landmask,
    rebuild_georef,
)

REPRESENTATION_DIR = "global_0.1_degree_representation"
LANDMASK_DIR = "global_0.1_degree_tiff_all"
LAYOUTS = ("auto", "geotessera", "mirror", "list")
_TILE_KEY = re.compile(r"^(?P<year>\d{4})/(?P<dir>[^/]+)/(?P<name>[^/]+)\.npy$")


@dataclass(frozen=True)
class TileSource:
    """The files of one (tile, year) in a source (absolute URIs: local paths or ``s3://``).

    Attributes:
        grid: the tile's name as found (``grid_X_Y``; may be unparsable: a per-tile error).
        year: the year.
        embeddings: URI of ``grid_X_Y.npy``.
        scales: URI of ``grid_X_Y_scales.npy``.
        landmask: URI of the landmask GeoTIFF, or None (the grid is then rebuilt).
    """

    grid: str
    year: int
    embeddings: str
    scales: str
    landmask: str | None = None

    @property
    def item_id(self) -> str:
        """``{grid}_{year}``."""
        return f"{self.grid}_{self.year}"

    @property
    def uris(self) -> tuple[str, ...]:
        """Every source file (provenance)."""
        return tuple(u for u in (self.embeddings, self.scales, self.landmask) if u)


@dataclass(frozen=True)
class TileFilter:
    """Which tiles to take: years, a lon/lat bbox (cells overlapping it), grid names."""

    years: frozenset[int] | None = None
    bbox: tuple[float, float, float, float] | None = None
    grids: frozenset[str] | None = None

    def accepts(self, grid: str, year: int) -> bool:
        """True when the (grid, year) passes every filter (unparsable names pass the bbox)."""
        if self.years is not None and year not in self.years:
            return False
        if self.grids is not None and grid not in self.grids:
            return False
        if self.bbox is not None:
            try:
                cell = GridCell.parse(grid)
            except ValueError:
                return True  # reported as a per-tile error, not silently dropped
            west, south, east, north = cell.bounds
            bw, bs, be, bn = self.bbox
            if west >= be or east <= bw or south >= bn or north <= bs:
                return False
        return True


# ----------------------------------------------------------------------------- discovery
def discover(
    source: str,
    layout: str = "auto",
    tile_filter: TileFilter | None = None,
    settings: StorageSettings | None = None,
    dataset: str | None = None,
    landmasks: str | None = None,
    use_manifest: bool = True,
) -> list[TileSource]:
    """Find the tiles of a source.

    Args:
        source: local directory or ``s3://bucket/prefix`` (for ``list``: a text file with one
            ``.npy`` URI per line, or a single ``.npy``).
        layout: ``auto``, ``geotessera``, ``mirror`` or ``list``.
        tile_filter: years / bbox / grids to keep.
        settings: S3 settings.
        dataset: mirror dataset (``npy/{dataset}``), required when there are several.
        landmasks: folder (URI) of ``grid_X_Y.tiff`` landmasks, overriding the layout's.
        use_manifest: use ``npy/{dataset}/manifest.parquet`` when the mirror has one.

    Returns:
        Sources sorted by (year, grid).

    Raises:
        InputError: no layout recognised, or an ambiguous mirror dataset.
    """
    flt = tile_filter or TileFilter()
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
    if layout == "list":
        found = _discover_list(source, flt, settings, landmasks)
    else:
        store = open_store(source, settings)
        if layout == "auto":
            layout = _detect_layout(store)
        if layout == "geotessera":
            found = _discover_cache(store, flt, landmasks)
        else:
            found = _discover_mirror(store, flt, dataset, landmasks, use_manifest, settings)
    return sorted(found, key=lambda s: (s.year, s.grid))


def _detect_layout(store: LocalStore | S3Store) -> str:
    for key in store.list():
        if key.startswith(f"{REPRESENTATION_DIR}/"):
            return "geotessera"
        if key.startswith("npy/"):
            return "mirror"
    raise InputError(
        f"{store.uri}: no TESSERA tiles found (expected {REPRESENTATION_DIR}/... "
        "or npy/{dataset}/...; use --layout list for explicit files)"
    )


def _landmask_index(store: LocalStore | S3Store, prefix: str) -> dict[str, str]:
    masks = {}
    for key in store.list(prefix):
        rel = key[len(prefix) + 1 :] if prefix else key
        if key.endswith((".tiff", ".tif")) and "/" not in rel:
            masks[Path(key).stem] = store.join(key)
    return masks


def _from_listing(
    store: LocalStore | S3Store,
    prefix: str,
    flt: TileFilter,
    masks: dict[str, str],
) -> list[TileSource]:
    found = []
    for key in store.list(prefix):
        match = _TILE_KEY.match(key[len(prefix) + 1 :])
        if not match or match["name"].endswith("_scales"):
            continue
        grid, year = match["name"], int(match["year"])
        if not flt.accepts(grid, year):
            continue
        folder = key.rsplit("/", 1)[0]
        found.append(
            TileSource(
                grid=grid,
                year=year,
                embeddings=store.join(key),
                scales=store.join(f"{folder}/{grid}_scales.npy"),
                landmask=masks.get(grid),
            )
        )
    return found


def _discover_cache(
    store: LocalStore | S3Store, flt: TileFilter, landmasks: str | None
) -> list[TileSource]:
    masks = _landmask_index(store, LANDMASK_DIR)
    if landmasks is not None:
        masks = _landmask_index(open_store(landmasks, _settings_of(store)), "")
    return _from_listing(store, REPRESENTATION_DIR, flt, masks)


def _settings_of(store: LocalStore | S3Store) -> StorageSettings | None:
    return store.settings if isinstance(store, S3Store) else None


def _pick_one(options: set[str], what: str, where: str, given: str | None) -> str:
    if given is not None:
        if given not in options:
            raise InputError(f"{where}: no {what} {given!r} (found: {sorted(options) or 'none'})")
        return given
    if len(options) != 1:
        raise InputError(
            f"{where}: {len(options)} {what}s found ({', '.join(sorted(options)) or 'none'}); "
            f"choose one with --dataset (model versions are never mixed)"
        )
    return next(iter(options))


def _discover_mirror(
    store: LocalStore | S3Store,
    flt: TileFilter,
    dataset: str | None,
    landmasks: str | None,
    use_manifest: bool,
    settings: StorageSettings | None,
) -> list[TileSource]:
    keys = list(store.list("npy"))
    datasets = {k.split("/")[1] for k in keys if k.count("/") >= 2}
    chosen = _pick_one(datasets, "dataset", f"{store.uri}/npy", dataset)
    mask_keys = list(store.list("landmasks"))
    versions = {k.split("/")[1] for k in mask_keys if k.count("/") >= 2}
    masks: dict[str, str] = {}
    if landmasks is not None:
        masks = _landmask_index(open_store(landmasks, settings), "")
    elif versions:
        version = (
            chosen if chosen in versions else _pick_one(versions, "landmask version", "", None)
        )
        masks = _landmask_index(store, f"landmasks/{version}")
    prefix = f"npy/{chosen}"
    manifest_key = f"{prefix}/manifest.parquet"
    if use_manifest and manifest_key in keys:
        return _from_manifest(store, prefix, manifest_key, flt, masks)
    return _from_listing(store, prefix, flt, masks)


def _from_manifest(
    store: LocalStore | S3Store,
    prefix: str,
    manifest_key: str,
    flt: TileFilter,
    masks: dict[str, str],
) -> list[TileSource]:
    import io

    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(store.read_bytes(manifest_key)))
    except Exception as exc:
        raise InputError(f"{store.join(manifest_key)}: cannot read manifest: {exc}") from exc
    missing = {"year", "grid_path", "scales_path"} - set(table.column_names)
    if missing:
        raise InputError(
            f"{store.join(manifest_key)}: manifest lacks columns {', '.join(sorted(missing))}"
        )
    rows = table.to_pylist()
    variants = {(r.get("version"), r.get("variant")) for r in rows}
    if len(variants) > 1:
        raise InputError(
            f"{store.join(manifest_key)}: manifest mixes model versions/variants "
            f"{sorted(map(str, variants))}; publish each into its own collection"
        )
    found = []
    for row in rows:
        grid_path = str(row["grid_path"])
        grid = Path(grid_path).stem
        year = int(row["year"])
        if not flt.accepts(grid, year):
            continue
        found.append(
            TileSource(
                grid=grid,
                year=year,
                embeddings=store.join(_resolve(grid_path, prefix)),
                scales=store.join(_resolve(str(row["scales_path"]), prefix)),
                landmask=masks.get(grid),
            )
        )
    return found


def _resolve(path: str, prefix: str) -> str:
    """Manifest paths are relative to the mirror root (``npy/...``) or to ``npy/{dataset}``."""
    path = path.lstrip("/")
    return path if path.startswith("npy/") else f"{prefix}/{path}"


def _discover_list(
    source: str, flt: TileFilter, settings: StorageSettings | None, landmasks: str | None
) -> list[TileSource]:
    if source.endswith(".npy"):
        uris = [source]
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{source}: file list not found (one .npy path or URI per line)")
        uris = [line.strip() for line in path.read_text().splitlines()]
        uris = [u for u in uris if u and not u.startswith("#")]
    masks = _landmask_index(open_store(landmasks, settings), "") if landmasks else {}
    found = []
    for uri in uris:
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        grid = name[: -len(".npy")] if name.endswith(".npy") else name
        parts = uri.rstrip("/").split("/")
        year_part = parts[-3] if len(parts) >= 3 else ""
        year = int(year_part) if year_part.isdigit() else 0
        if not flt.accepts(grid, year) and year != 0:
            continue
        found.append(
            TileSource(
                grid=grid,
                year=year,
                embeddings=uri,
                scales=f"{uri[: -len('.npy')]}_scales.npy" if uri.endswith(".npy") else uri,
                landmask=masks.get(grid),
            )
        )
    return found


# ------------------------------------------------------------------------------- reading
class SourceRef(Protocol):
    """What a run needs to name a source: a :class:`TileSource`, or a cell of a Zarr store."""

    @property
    def grid(self) -> str: ...
    @property
    def year(self) -> int: ...
    @property
    def item_id(self) -> str: ...
    @property
    def embeddings(self) -> str: ...
    @property
    def uris(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class LoadedTile:
    """A tile's arrays and grid, checked for shape, dtype and georeferencing.

    ``counts`` holds pixel counts a source knows better than the validity rules (a Zarr
    store's water and unfilled land); they replace those of the run report.
    """

    cell: GridCell
    year: int
    georef: TileGeoref
    embeddings: np.ndarray  # (H, W, 128) int8, possibly a read-only memmap
    scales: np.ndarray  # (H, W) float32
    landmask: np.ndarray | None  # (H, W), 0 = water
    source: SourceRef
    counts: dict[str, int] = field(default_factory=dict)


def _load_npy(path: Path, uri: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for broken files
        raise InputError(f"{uri}: cannot read .npy ({type(exc).__name__}: {exc})") from exc


def load_tile(
    source: TileSource, scratch: Path, settings: StorageSettings | None = None
) -> LoadedTile:
    """Read and check one tile's files (S3 objects are downloaded into ``scratch``).

    Raises:
        InputError: naming the file and the problem (bad name, missing file, corrupt or
            truncated ``.npy``, wrong dtype/rank/shape, mismatched scales or landmask).
    """
    try:
        cell = GridCell.parse(source.grid)
    except ValueError as exc:
        raise InputError(f"{source.embeddings}: {exc}") from exc
    if source.year <= 0:
        raise InputError(f"{source.embeddings}: cannot tell the year (expected .../YEAR/grid/)")
    emb = _load_npy(fetch(source.embeddings, scratch, settings), source.embeddings)
    if emb.dtype != np.int8:
        raise InputError(f"{source.embeddings}: embeddings dtype is {emb.dtype}, expected int8")
    if emb.ndim != 3 or emb.shape[2] != EMBEDDING_DIM:
        raise InputError(
            f"{source.embeddings}: embeddings shape {emb.shape}, expected (H, W, {EMBEDDING_DIM})"
        )
    height, width = emb.shape[:2]
    scales = _load_scales(fetch(source.scales, scratch, settings), source.scales, (height, width))
    landmask: np.ndarray | None = None
    if source.landmask:
        georef, landmask = read_landmask(fetch(source.landmask, scratch, settings), source.landmask)
        if georef.shape != (height, width):
            raise InputError(
                f"{source.landmask}: landmask shape {georef.shape} does not match the "
                f"embeddings {(height, width)} of {source.embeddings}"
            )
        check_matches(georef, cell, source.landmask)
    else:
        georef = rebuild_georef(cell)
        if georef.shape != (height, width):
            raise InputError(
                f"{source.embeddings}: shape {(height, width)} is not the grid of {cell.name} "
                f"{georef.shape} (rebuilt; give the landmask if the tile is cropped)"
            )
    return LoadedTile(cell, source.year, georef, emb, scales, landmask, source)


def _load_scales(path: Path, uri: str, shape: tuple[int, int]) -> np.ndarray:
    scales = _load_npy(path, uri)
    if scales.dtype != np.float32:
        raise InputError(f"{uri}: scales dtype is {scales.dtype}, expected float32")
    if scales.shape == shape:
        return np.asarray(scales)
    if scales.shape == (*shape, EMBEDDING_DIM):
        return _per_pixel(scales, uri)
    raise InputError(f"{uri}: scales shape {scales.shape} does not match the embeddings {shape}")


def _per_pixel(scales: np.ndarray, uri: str) -> np.ndarray:
    """Accept (H, W, 128) scales when all 128 are equal per pixel (one scale per pixel)."""
    out = np.empty(scales.shape[:2], dtype=np.float32)
    for r0 in range(0, scales.shape[0], 64):
        block = np.asarray(scales[r0 : r0 + 64])
        first = block[..., 0]
        same = (block == first[..., None]) | (np.isnan(block) & np.isnan(first)[..., None])
        if not same.all():
            raise InputError(
                f"{uri}: per-dimension scales (H, W, 128) differ within a pixel; the product "
                "stores one scale per pixel, so these tiles are not supported"
            )
        out[r0 : r0 + 64] = first
    return out


def sources_for(
    root: str, cells: Iterable[GridCell], years: Iterable[int], with_landmask: bool = True
) -> list[TileSource]:
    """Sources of cells/years in a local geotessera-layout folder (tests and demo)."""
    base = Path(root)
    out = []
    for cell in cells:
        for year in years:
            folder = base / REPRESENTATION_DIR / str(year) / cell.name
            mask = base / LANDMASK_DIR / f"{cell.name}.tiff"
            out.append(
                TileSource(
                    grid=cell.name,
                    year=year,
                    embeddings=str(folder / f"{cell.name}.npy"),
                    scales=str(folder / f"{cell.name}_scales.npy"),
                    landmask=str(mask) if with_landmask and mask.is_file() else None,
                )
            )
    return out

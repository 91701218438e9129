"""Synthetic TESSERA tiles with the real geometry, dtype and defects (demo, tests, benchmarks).

No real TESSERA tile can be downloaded here, so this generator makes tiles that look like them:

* the exact grid of the cell (``embeddings.georef.rebuild_georef``), so the
  landmask it writes has the official CRS/transform/shape;
* values from smooth fields of longitude/latitude, so neighbouring pixels (and neighbouring
  tiles) are alike, with land and water clearly different;
* the producer's quantisation: ``scale = max|x| / 127`` (median ~0.064), ``q = round(x/scale)``
  in [-127, 127];
* water from the landmask (0 = water), shared by every year of a cell;
* optional real-world defects: zero-filled (unprocessed) pixels, huge-sentinel scales
  (``3.4e38`` and ``-161685``), all-water tiles.

Everything is deterministic: the fields are seeded from constants (and the year) so tiles join
seamlessly; per-tile noise and defects are seeded from ``grid`` + ``year``.

Files are written in geotessera's local-cache layout (or the public mirror layout)::

    global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y.npy   (+ grid_X_Y_scales.npy)
    global_0.1_degree_tiff_all/grid_X_Y.tiff
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import Transformer

from tessera_stac.catalog.constants import EMBEDDING_DIM
from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.embeddings.georef import TileGeoref, rebuild_georef

LATENT = 8  # smooth latent fields mixed into the 128 dimensions
COARSE_STEP = 8  # pixels between evaluations of the smooth fields (then bilinear)
WATER_THRESHOLD = 1.0  # water where the water field exceeds this (~15-20 % of the tile)
AMPLITUDE = 3.9  # std of one dimension; gives a median scale of ~0.064
SENTINELS = (np.float32(3.4028235e38), np.float32(-161685.0))
REPRESENTATION_DIR = "global_0.1_degree_representation"
LANDMASK_DIR = "global_0.1_degree_tiff_all"


@dataclass(frozen=True)
class SampleOptions:
    """What to generate.

    Attributes:
        zero_fraction: share of the tile zero-filled (``q = 0``, ``s = 0``) in rectangles,
            like unprocessed pixels in published files.
        sentinel_fraction: share of pixels whose scale is a huge sentinel (3.4e38 / -161685).
        all_water: the whole tile is water (landmask all 0).
        crop: ``(height, width)`` to keep only the top-left part (fast tests); the landmask is
            cropped the same way (same origin) so the tile stays self-consistent.
        landmask: write the landmask GeoTIFF.
        change_bbox: ``(west, south, east, north)`` where land changes on purpose: from
            ``change_from`` on, its land pixels are drawn from another mixing (a different land
            cover), so their cosine distance to earlier years is large (~1); water stays water.
        change_from: the first year of the changed land cover.
        landcover: draw land pixels from land-cover classes (:data:`LANDCOVER_CLASSES`): a
            prototype vector per class, class regions from smooth fields of lon/lat (the same
            in every year and across tiles), mixed prototypes near class edges, smooth
            variation within a class and per-pixel noise. The tile's ``classes`` holds the
            truth (class value 1..n, 0 on water).
    """

    zero_fraction: float = 0.0
    sentinel_fraction: float = 0.0
    all_water: bool = False
    crop: tuple[int, int] | None = None
    landmask: bool = True
    change_bbox: tuple[float, float, float, float] | None = None
    change_from: int | None = None
    landcover: bool = False

    def changed(self, year: int) -> bool:
        """True when ``year`` has the changed land cover inside ``change_bbox``."""
        return (
            self.change_bbox is not None
            and self.change_from is not None
            and year >= self.change_from
        )


@dataclass(frozen=True)
class SampleTile:
    """Arrays of one generated (tile, year)."""

    cell: GridCell
    year: int
    georef: TileGeoref
    embeddings: np.ndarray  # (H, W, 128) int8
    scales: np.ndarray  # (H, W) float32
    landmask: np.ndarray  # (H, W) uint8, 0 = water
    classes: np.ndarray | None = None  # (H, W) uint8 truth of SampleOptions.landcover, 0 = water


@dataclass(frozen=True)
class SampleFiles:
    """Where :func:`write_tile` put one (tile, year)."""

    cell: GridCell
    year: int
    embeddings: Path
    scales: Path
    landmask: Path | None


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class _Waves:
    """A sum of plane waves in (lon, lat): a smooth, global, deterministic field."""

    kx: np.ndarray  # (n, k) cycles per degree
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def make(
        cls,
        seed: int,
        outputs: int,
        waves: int = 12,
        shortest: float = 0.004,
        longest: float = 0.25,
    ) -> _Waves:
        rng = np.random.default_rng(seed)
        # wavelengths 0.004° .. 0.25° (~400 m .. 25 km) by default, log-uniform
        wavelength = np.exp(rng.uniform(np.log(shortest), np.log(longest), size=(waves, outputs)))
        angle = rng.uniform(0, 2 * np.pi, size=(waves, outputs))
        amp = (wavelength / longest) ** 0.5  # long waves dominate: fields are smooth
        amp = amp / np.sqrt((amp**2).sum(axis=0, keepdims=True) / 2)  # unit variance
        return cls(
            kx=np.cos(angle) / wavelength,
            ky=np.sin(angle) / wavelength,
            phase=rng.uniform(0, 2 * np.pi, size=(waves, outputs)),
            amp=amp,
        )

    def __call__(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Evaluate at points (any shape) -> (..., outputs) float32."""
        shape = lon.shape
        lon_f, lat_f = lon.reshape(-1, 1, 1), lat.reshape(-1, 1, 1)
        arg = 2 * np.pi * (lon_f * self.kx + lat_f * self.ky) + self.phase
        out = (np.sin(arg) * self.amp).sum(axis=1)
        return out.reshape(*shape, -1).astype(np.float32)


def _coarse_lonlat(georef: TileGeoref, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Lon/lat of pixel centres every COARSE_STEP px, with those pixel rows/cols."""
    rows = np.arange(0, height - 1 + COARSE_STEP, COARSE_STEP, dtype=np.float64)
    cols = np.arange(0, width - 1 + COARSE_STEP, COARSE_STEP, dtype=np.float64)
    a, _, c, _, e, f = georef.transform
    xs = c + (cols + 0.5) * a
    ys = f + (rows + 0.5) * e
    gx, gy = np.meshgrid(xs, ys)
    to_geo = Transformer.from_crs(f"EPSG:{georef.epsg}", "EPSG:4326", always_xy=True)
    lon, lat = to_geo.transform(gx, gy)
    return np.asarray(lon), np.asarray(lat), rows, cols


def _interp_weights(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index and weights to interpolate values given at ``coords`` onto 0..n-1."""
    pos = np.arange(n, dtype=np.float64) / COARSE_STEP
    lo = np.minimum(pos.astype(np.int64), len(coords) - 2)
    frac = (pos - lo).astype(np.float32)
    return lo, lo + 1, frac


def _upsample_rows(
    coarse: np.ndarray,
    r0: int,
    r1: int,
    row_w: tuple[np.ndarray, np.ndarray, np.ndarray],
    col_w: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Bilinear values of ``coarse`` (h, w, k) for full-resolution rows r0..r1 -> (rows, W, k)."""
    lo, hi, fr = (a[r0:r1] for a in row_w)
    rows = coarse[lo] * (1 - fr)[:, None, None] + coarse[hi] * fr[:, None, None]
    clo, chi, cfr = col_w
    return rows[:, clo] * (1 - cfr)[None, :, None] + rows[:, chi] * cfr[None, :, None]


@dataclass(frozen=True)
class _Model:
    """Fixed mixing of latent fields into 128 dimensions for land and for water."""

    land: np.ndarray  # (LATENT, 128)
    land_bias: np.ndarray  # (128,)
    water: np.ndarray
    water_bias: np.ndarray
    changed: np.ndarray  # the land cover of SampleOptions.change_bbox
    changed_bias: np.ndarray

    @classmethod
    def make(cls) -> _Model:
        rng = np.random.default_rng(_seed("tessera-stac-sample-model"))
        scale = AMPLITUDE / math.sqrt(LATENT + 1)
        return cls(
            land=(rng.normal(size=(LATENT, EMBEDDING_DIM)) * scale).astype(np.float32),
            land_bias=(rng.normal(size=EMBEDDING_DIM) * scale).astype(np.float32),
            water=(rng.normal(size=(LATENT, EMBEDDING_DIM)) * scale * 0.25).astype(np.float32),
            water_bias=(rng.normal(size=EMBEDDING_DIM) * AMPLITUDE * 0.8).astype(np.float32),
            changed=(rng.normal(size=(LATENT, EMBEDDING_DIM)) * scale).astype(np.float32),
            changed_bias=(rng.normal(size=EMBEDDING_DIM) * scale).astype(np.float32),
        )


#: the sample land-cover classes (name, colour); a class's value is its position + 1
LANDCOVER_CLASSES: tuple[tuple[str, str], ...] = (
    ("cropland", "#e8c547"),
    ("forest", "#1b7837"),
    ("grassland", "#a6d96a"),
    ("built-up", "#d73027"),
    ("bare", "#b8a48c"),
)
CLASS_SHORTEST, CLASS_LONGEST = 0.006, 0.04  # class fields' wavelengths: regions ~0.3-2 km
CLASS_SHARPNESS = 4.0  # softmax of the class fields: prototypes mix near class edges
CLASS_VARIATION = 0.9  # smooth within-class variation (latent mixing), x AMPLITUDE / sqrt(8)
CLASS_NOISE = 0.6  # per-pixel noise per dimension, x AMPLITUDE
NOISE_BANK = 16384  # distinct noise vectors (drawing an index per pixel is ~50x cheaper)


@dataclass(frozen=True)
class _LandCover:
    """Prototype vectors of the sample classes and the smooth fields that place them."""

    prototypes: np.ndarray  # (classes, 128)
    variation: np.ndarray  # (LATENT, 128): smooth within-class variation
    field: _Waves  # one smooth field per class; a pixel's class is the largest
    noise: np.ndarray  # (NOISE_BANK, 128) per-pixel noise vectors, drawn by index

    @classmethod
    def make(cls) -> _LandCover:
        rng = np.random.default_rng(_seed("tessera-stac-sample-landcover"))
        n = len(LANDCOVER_CLASSES)
        prototypes = rng.normal(size=(n, EMBEDDING_DIM)) * AMPLITUDE * 0.5
        # grassland lies between cropland and forest: the classes people confuse
        prototypes[2] = 0.5 * prototypes[0] + 0.35 * prototypes[1] + 0.4 * prototypes[2]
        scale = AMPLITUDE / math.sqrt(LATENT + 1)
        return cls(
            prototypes=prototypes.astype(np.float32),
            variation=(rng.normal(size=(LATENT, EMBEDDING_DIM)) * scale * CLASS_VARIATION).astype(
                np.float32
            ),
            field=_Waves.make(
                _seed("landcover"), n, waves=10, shortest=CLASS_SHORTEST, longest=CLASS_LONGEST
            ),
            noise=(
                rng.standard_normal(size=(NOISE_BANK, EMBEDDING_DIM), dtype=np.float32)
                * np.float32(CLASS_NOISE * AMPLITUDE)
            ),
        )

    def vectors(
        self, fields: np.ndarray, z: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Land vectors (n, 128) and class values (n,) from class fields (n, k), latent z (n, 8)."""
        weights = fields * np.float32(CLASS_SHARPNESS)
        weights -= weights.max(axis=1, keepdims=True)
        np.exp(weights, out=weights)
        weights /= weights.sum(axis=1, keepdims=True)
        x = weights @ self.prototypes
        x += z @ self.variation
        x += self.noise[rng.integers(0, len(self.noise), size=x.shape[0])]  # a cheap draw
        return x, (np.argmax(fields, axis=1) + 1).astype(np.uint8)


def quantise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The producer's quantisation of float vectors ``x`` (..., 128).

    Returns:
        ``(q, scale)``: int8 codes in [-127, 127] and the float32 per-vector scale
        ``max|x| / 127`` (0 for an all-zero vector, whose codes are 0).
    """
    return _quantise_inplace(np.array(x, dtype=np.float32))


def _quantise_inplace(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantise`, overwriting the float32 array ``x``."""
    peak = np.maximum(x.max(axis=-1), -x.min(axis=-1))
    scale = (peak / np.float32(127)).astype(np.float32)
    inverse = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale > 0)
    x *= inverse[..., None]
    np.rint(x, out=x)
    np.clip(x, -127, 127, out=x)
    return x.astype(np.int8), scale


def generate_tile(cell: GridCell, year: int, options: SampleOptions | None = None) -> SampleTile:
    """Generate the arrays of one (tile, year) in memory (a full tile takes a few seconds).

    Args:
        cell: grid cell.
        year: year (fields vary a little from year to year).
        options: defects, crop, all-water.
    """
    opts = options or SampleOptions()
    georef = rebuild_georef(cell)
    height, width = georef.shape
    if opts.crop is not None:
        height, width = min(opts.crop[0], height), min(opts.crop[1], width)
        georef = TileGeoref(georef.epsg, georef.transform, height, width, georef.source)
    lon, lat, rows, cols = _coarse_lonlat(georef, height, width)
    base = _Waves.make(_seed("latent"), LATENT)(lon, lat)
    yearly = _Waves.make(_seed("latent", year), LATENT)(lon, lat)
    latent = base + np.float32(0.35) * yearly  # (h, w, LATENT)
    water_field = _Waves.make(_seed("water"), 1, waves=16)(lon, lat)  # (h, w, 1)
    change_field = None
    if opts.changed(year):
        assert opts.change_bbox is not None
        west, south, east, north = opts.change_bbox
        inside = (lon >= west) & (lon < east) & (lat >= south) & (lat < north)
        change_field = inside.astype(np.float32)[..., None]
    row_w = _interp_weights(rows, height)
    col_w = _interp_weights(cols, width)
    model = _Model.make()
    cover = _LandCover.make() if opts.landcover else None
    class_field = cover.field(lon, lat) if cover is not None else None
    truth = np.zeros((height, width), dtype=np.uint8) if cover is not None else None
    rng = np.random.default_rng(_seed(cell.name, year))

    q = np.empty((height, width, EMBEDDING_DIM), dtype=np.int8)
    s = np.empty((height, width), dtype=np.float32)
    landmask = np.empty((height, width), dtype=np.uint8)
    chunk = 64
    for r0 in range(0, height, chunk):
        r1 = min(r0 + chunk, height)
        z = _upsample_rows(latent, r0, r1, row_w, col_w)
        z += rng.normal(scale=0.25, size=z.shape).astype(np.float32)
        water = _upsample_rows(water_field, r0, r1, row_w, col_w)[..., 0] > WATER_THRESHOLD
        if opts.all_water:
            water[:] = True
        z = np.tanh(z).reshape(-1, LATENT)
        flat_water = water.reshape(-1)
        if cover is not None and class_field is not None and truth is not None:
            fields = _upsample_rows(class_field, r0, r1, row_w, col_w).reshape(
                -1, len(LANDCOVER_CLASSES)
            )
            x, flat_truth = cover.vectors(fields, z, rng)
            flat_truth[flat_water] = 0
            truth[r0:r1] = flat_truth.reshape(r1 - r0, width)
        else:
            x = z @ model.land  # 2-D matmul: BLAS
            x += model.land_bias
        if flat_water.any():
            x[flat_water] = z[flat_water] @ model.water + model.water_bias
        if change_field is not None:
            flat_changed = (
                _upsample_rows(change_field, r0, r1, row_w, col_w)[..., 0].reshape(-1) > 0.5
            ) & ~flat_water
            if flat_changed.any():
                x[flat_changed] = z[flat_changed] @ model.changed + model.changed_bias
        q[r0:r1], s[r0:r1] = _quantise_inplace(x.reshape(r1 - r0, width, EMBEDDING_DIM))
        landmask[r0:r1] = ~water
    _add_defects(q, s, opts, rng)
    return SampleTile(cell, year, georef, q, s, landmask, truth)


def _add_defects(
    q: np.ndarray, s: np.ndarray, opts: SampleOptions, rng: np.random.Generator
) -> None:
    height, width = s.shape
    if opts.zero_fraction > 0:
        target = opts.zero_fraction * height * width
        zeroed = np.zeros((height, width), dtype=bool)
        while zeroed.sum() < target:
            h = int(rng.integers(8, max(9, height // 4)))
            w = int(rng.integers(8, max(9, width // 4)))
            r, c = int(rng.integers(0, max(1, height - h))), int(rng.integers(0, max(1, width - w)))
            zeroed[r : r + h, c : c + w] = True
        q[zeroed] = 0
        s[zeroed] = 0
    if opts.sentinel_fraction > 0:
        n = max(1, round(opts.sentinel_fraction * height * width))
        flat = rng.choice(height * width, size=n, replace=False)
        values = np.array(SENTINELS, dtype=np.float32)[np.arange(n) % len(SENTINELS)]
        s.reshape(-1)[flat] = values


# ------------------------------------------------------------------------------- writing
def tile_paths(root: Path, cell: GridCell, year: int, layout: str = "geotessera") -> SampleFiles:
    """Where a (tile, year) lives under ``root`` in a layout (``geotessera`` or ``mirror``).

    The mirror layout is ``npy/v1/{year}/grid_X_Y/...`` + ``landmasks/v1/grid_X_Y.tiff``.
    """
    name = cell.name
    if layout == "geotessera":
        folder = root / REPRESENTATION_DIR / str(year) / name
        landmask = root / LANDMASK_DIR / f"{name}.tiff"
    elif layout == "mirror":
        folder = root / "npy" / "v1" / str(year) / name
        landmask = root / "landmasks" / "v1" / f"{name}.tiff"
    else:
        raise ValueError(f"unknown layout {layout!r} (geotessera or mirror)")
    return SampleFiles(cell, year, folder / f"{name}.npy", folder / f"{name}_scales.npy", landmask)


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def write_landmask(path: Path, georef: TileGeoref, landmask: np.ndarray) -> None:
    """Write a landmask GeoTIFF (uint8, 0 = water) on the tile's grid, atomically."""
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "height": georef.height,
        "width": georef.width,
        "crs": georef.crs,
        "transform": georef.affine(),
        "compress": "DEFLATE",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.write(landmask, 1)
    os.replace(tmp, path)


def write_tile(
    root: Path,
    cell: GridCell,
    year: int,
    options: SampleOptions | None = None,
    layout: str = "geotessera",
) -> SampleFiles:
    """Generate one (tile, year) and write its ``.npy`` files and landmask under ``root``."""
    opts = options or SampleOptions()
    tile = generate_tile(cell, year, opts)
    paths = tile_paths(Path(root), cell, year, layout)
    _save_npy(paths.embeddings, tile.embeddings)
    _save_npy(paths.scales, tile.scales)
    landmask: Path | None = None
    if opts.landmask and paths.landmask is not None:
        write_landmask(paths.landmask, tile.georef, tile.landmask)
        landmask = paths.landmask
    return SampleFiles(cell, year, paths.embeddings, paths.scales, landmask)


def cells_in_bbox(bbox: tuple[float, float, float, float]) -> list[GridCell]:
    """Every 0.1° cell that overlaps ``(west, south, east, north)`` (at least one cell)."""
    west, south, east, north = bbox
    if west > east or south > north:
        raise ValueError(f"bbox must be west,south,east,north with west<=east: {bbox}")
    ix0, iy0 = math.floor(round(west * 10, 9)), math.floor(round(south * 10, 9))
    ix1 = max(ix0, math.ceil(round(east * 10, 9)) - 1)
    iy1 = max(iy0, math.ceil(round(north * 10, 9)) - 1)
    return [
        GridCell(round(ix / 10 + 0.05, 2), round(iy / 10 + 0.05, 2))
        for ix in range(ix0, ix1 + 1)
        for iy in range(iy0, iy1 + 1)
    ]


def generate(
    root: Path,
    cells: Iterable[GridCell],
    years: Iterable[int],
    options: SampleOptions | None = None,
    layout: str = "geotessera",
) -> Iterator[SampleFiles]:
    """Write every (cell, year) under ``root``; yields each as it is written."""
    year_list = list(years)
    for cell in cells:
        for year in year_list:
            yield write_tile(root, cell, year, options, layout)

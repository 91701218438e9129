"""Packed codes + scales tiles (api.packed) against rio-tiler's stacks: the same 129-band array
when built, the same mosaic, and the algorithms' output equal bit for bit."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.models import ImageData
from rio_tiler.mosaic import mosaic_reader
from rio_tiler.mosaic.methods.defaults import FirstMethod, HighestMethod

from tessera_stac.api.packed import PackedImage, mask_pixels, mosaic_tile, pack, packed_parts
from tessera_stac.api.tiles import EmbeddingProjection, EmbeddingSimilarity, dequantised

H = W = 70  # not a multiple of api.tiles.ROWS_AT_ONCE


def parts(seed: int, nodata_rows: slice = slice(0, 0)) -> list[ImageData]:
    """A codes image (128 int8 bands, -128 nodata) and a scales image (NaN nodata)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-127, 128, size=(128, H, W), dtype=np.int8)
    codes[:, nodata_rows] = -128
    codes[5, 3, 4] = -128  # one band's nodata only
    scales = rng.uniform(0.01, 0.2, size=(1, H, W)).astype(np.float32)
    scales[0, 7, 8] = np.nan
    scales[0, 9, 9] = 1.5  # outside the valid range
    meta: dict[str, Any] = {"crs": "EPSG:3857", "bounds": (0, 0, 1, 1)}
    return [
        ImageData(
            np.ma.MaskedArray(codes, mask=codes == -128),
            band_names=[f"b{i}" for i in range(1, 129)],
            band_descriptions=[f"embeddings_b{i}" for i in range(1, 129)],
            metadata={"embeddings": {}},
            assets=["a"],
            **meta,
        ),
        ImageData(
            np.ma.MaskedArray(scales, mask=np.isnan(scales)),
            band_names=["b1"],
            band_descriptions=["scales_b1"],
            metadata={"scales": {}},
            assets=["a"],
            **meta,
        ),
    ]


def same_masked(a: np.ma.MaskedArray, b: np.ma.MaskedArray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(np.ma.getdata(a), np.ma.getdata(b), equal_nan=True)
    assert np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b))


def same_image(a: ImageData, b: ImageData) -> None:
    same_masked(a.array, b.array)
    for field in ("band_names", "band_descriptions", "scales", "offsets", "metadata", "assets"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.bounds == b.bounds and a.crs == b.crs


def test_pack_builds_rio_tilers_stack() -> None:
    packed = pack(parts(1))
    assert isinstance(packed, PackedImage) and packed_parts(packed) is not None
    assert (packed.count, packed.height, packed.width) == (129, H, W)
    same_image(packed, ImageData.create_from_list(parts(1)))
    packed.array = packed.array[:3]  # assigned: a plain image from then on
    assert packed_parts(packed) is None and packed.count == 3


def test_pack_leaves_other_reads_stacked() -> None:
    codes, scales = parts(2)
    for other in ([codes], [scales, codes], [codes, codes]):
        img = pack(other)
        assert packed_parts(img) is None
        same_image(img, ImageData.create_from_list(other))


@pytest.mark.parametrize("algorithm", ["pca", "similarity"])
def test_algorithms_bit_equal(algorithm: str) -> None:
    rng = np.random.default_rng(7)
    if algorithm == "pca":
        projection = {
            "mean": rng.normal(0, 0.01, 128).tolist(),
            "basis": rng.normal(size=(128, 3)).tolist(),
            "stretch": [[-0.5, 0.5]] * 3,
        }
        run: Any = EmbeddingProjection(projection=projection)
    else:
        run = EmbeddingSimilarity(vector=rng.normal(size=128).tolist())
    packed = pack(parts(3, slice(10, 12)))
    stacked = ImageData.create_from_list(parts(3, slice(10, 12)))
    mask_pixels(packed, np.arange(W)[None, :] < np.arange(H)[:, None])
    mask_pixels(stacked, np.arange(W)[None, :] < np.arange(H)[:, None])
    va, ka = dequantised(packed)
    vb, kb = dequantised(stacked)
    assert np.array_equal(ka, kb) and np.array_equal(va, vb, equal_nan=True)
    assert va.strides == vb.strides
    out_a, out_b = run(packed), run(stacked)
    same_masked(out_a.array, out_b.array)


def cell_reader(images: dict[str, list[ImageData]], packed: bool) -> Any:
    """A mosaic item reader: item ``name``'s two parts, masked outside its own columns."""

    def read(asset: str, *args: Any, **kwargs: Any) -> ImageData:
        if asset == "missing":
            raise TileOutsideBounds("no")
        got = [
            ImageData(p.array.copy(), **{k: getattr(p, k) for k in ("crs", "bounds")})
            for p in images[asset]
        ]
        for p, src in zip(got, images[asset], strict=True):
            p.band_names, p.band_descriptions = src.band_names, src.band_descriptions
        img = pack(got) if packed else ImageData.create_from_list(got)
        column = int(asset[-1])
        outside = np.ones((H, W), dtype=bool)
        outside[:, column * 16 : (column + 1) * 16 + 4] = False  # overlapping a little
        mask_pixels(img, outside)
        return img

    return read


MOSAICS = [["i0"], ["i0", "missing", "i1", "i2"], ["i3", "i0", "i1", "i2"]]


@pytest.mark.parametrize("assets", MOSAICS)
@pytest.mark.parametrize("threads", [1, 4])
def test_mosaic_tile_is_mosaic_reader(assets: list[str], threads: int) -> None:
    images = {f"i{n}": parts(10 + n, slice(n, n + 3)) for n in range(4)}
    got, used = mosaic_tile(assets, cell_reader(images, True), 1, 2, 3, threads=threads)
    want, want_used = mosaic_reader(assets, cell_reader(images, False), 1, 2, 3, threads=threads)
    assert used == want_used
    assert packed_parts(got) is not None
    same_masked(got.array, want.array)
    assert got.array.fill_value == want.array.fill_value
    assert got.metadata == want.metadata and got.band_names == want.band_names
    rng = np.random.default_rng(0)
    run = EmbeddingSimilarity(vector=rng.normal(size=128).tolist())
    same_masked(run(got).array, run(want).array)


def test_mosaic_tile_mixed_and_other_methods() -> None:
    images = {f"i{n}": parts(20 + n) for n in range(3)}
    packed, plain = cell_reader(images, True), cell_reader(images, False)

    def mixed(asset: str, *args: Any, **kwargs: Any) -> ImageData:
        return (plain if asset == "i1" else packed)(asset, *args, **kwargs)

    assets = ["i0", "i1", "i2"]
    want, _ = mosaic_reader(assets, plain, 0, 0, 0, threads=1)
    got, _ = mosaic_tile(assets, mixed, 0, 0, 0, threads=1)
    assert packed_parts(got) is None
    same_masked(got.array, want.array)
    want, _ = mosaic_reader(assets, plain, 0, 0, 0, pixel_selection=HighestMethod, threads=1)
    got, _ = mosaic_tile(assets, packed, 0, 0, 0, pixel_selection=HighestMethod(), threads=1)
    same_masked(got.array, want.array)
    got, _ = mosaic_tile(assets, packed, 0, 0, 0, pixel_selection=FirstMethod(), threads=1)
    assert packed_parts(got) is not None


def test_projection_of_band_first_values_is_the_plain_formula() -> None:
    from tessera_stac.catalog.projection import apply_projection

    rng = np.random.default_rng(5)
    projection = {
        "mean": rng.normal(0, 0.01, 128).tolist(),
        "basis": rng.normal(size=(128, 3)).tolist(),
        "stretch": [[-0.3, 0.3]] * 3,
    }
    band_first = rng.normal(0, 0.1, size=(128, H, W)).astype(np.float32)
    band_first[:, 2, 3] = np.nan
    values = np.moveaxis(band_first, 0, -1)  # as the tiles hold them
    mean = np.asarray(projection["mean"], dtype=np.float32)
    basis = np.asarray(projection["basis"], dtype=np.float32)
    plain = (values - mean) @ basis  # the formula on the same layout
    stretch = np.asarray(projection["stretch"], dtype=np.float32)
    unit = (plain - stretch[:, 0]) / (stretch[:, 1] - stretch[:, 0])
    want = np.rint(np.clip(np.nan_to_num(unit), 0.0, 1.0) * 255.0).astype(np.uint8)
    assert np.array_equal(apply_projection(values, projection), want)
    assert np.array_equal(
        apply_projection(np.ascontiguousarray(values), projection),
        apply_projection(values, projection),
    )


@pytest.mark.parametrize("algorithm", ["pca", "similarity"])
@pytest.mark.parametrize("packed", [True, False])
def test_algorithms_by_rows_equal_the_whole_tile_formula(algorithm: str, packed: bool) -> None:
    """The map algorithms work a band of rows at a time (api.tiles.dequantised_rows): their
    output is bit for bit the formula on the whole tile's values at once, for a height that
    is not a multiple of the band (packed parts and rio-tiler's stack alike)."""
    from tessera_stac.api.tiles import ROWS_AT_ONCE
    from tessera_stac.catalog.projection import apply_projection

    assert H % ROWS_AT_ONCE != 0, "a last band shorter than the others"
    rng = np.random.default_rng(11)
    images = parts(5, slice(ROWS_AT_ONCE - 1, ROWS_AT_ONCE + 1))  # nodata across a boundary
    img = pack(images) if packed else ImageData.create_from_list(images)
    mask_pixels(img, np.arange(W)[None, :] < np.arange(H)[:, None] - 40)
    values, valid = dequantised(img)  # the whole tile at once
    if algorithm == "pca":
        projection = {
            "mean": rng.normal(0, 0.01, 128).tolist(),
            "basis": rng.normal(size=(128, 3)).tolist(),
            "stretch": [[-0.5, 0.5]] * 3,
        }
        out = EmbeddingProjection(projection=projection)(img)
        want = np.moveaxis(apply_projection(values, projection), -1, 0)
    else:
        vector = rng.normal(size=128).tolist()
        out = EmbeddingSimilarity(vector=vector)(img)
        query = np.asarray(vector, dtype=np.float32)
        norms = np.linalg.norm(values, axis=-1) * np.float32(np.linalg.norm(query))
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (values @ query) / norms
        valid &= np.isfinite(cos)
        want = np.where(valid, cos, 0).astype(np.float32)[None]
    assert valid.any() and not valid.all()
    assert np.ma.getdata(out.array).dtype == want.dtype
    assert np.array_equal(np.ma.getdata(out.array), want)
    assert np.array_equal(~np.ma.getmaskarray(out.array)[0], valid)


class _OtherYear:
    """A rio-tiler reader stand-in for the other year: ``part`` answers ``images[href]`` (the
    codes or the scales image of a cell), on the tile's grid as the real read would."""

    images: ClassVar[dict[str, ImageData]] = {}

    def __init__(self, href: str) -> None:
        self.href = href

    def __enter__(self) -> _OtherYear:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def part(self, bounds: Any, **kwargs: Any) -> ImageData:
        assert kwargs["width"] == W and kwargs["height"] == H
        return self.images[self.href]


@pytest.mark.parametrize("item_cell", ["grid_72.05_23.05", None])
@pytest.mark.parametrize("packed", [True, False])
def test_change_by_rows_equals_the_whole_tile_formula(item_cell: str | None, packed: bool) -> None:
    """The change layer reads the other year as int8 codes and scales and works a band of rows
    at a time: bit for bit the whole-tile formula (both years dequantised whole, then the
    cosine distance), for one item and for a mosaic tile across two cells of the other year."""
    from tessera_stac.api.tile_layers import EmbeddingChange
    from tessera_stac.catalog.change import cosine_distance
    from tessera_stac.catalog.model import GridCell
    from tessera_stac.catalog.reader import dequantize
    from tessera_stac.catalog.stac import embeddings_quantization

    bounds = (72.095, 23.0, 72.105, 23.01)  # across the 72.1 cell edge
    images = parts(21, slice(30, 33))
    for image in images:
        image.bounds, image.crs = bounds, rasterio_crs("EPSG:4326")
    img = pack(images) if packed else ImageData.create_from_list(images)
    cells = [GridCell.containing(72.099, 23.005), GridCell.containing(72.101, 23.005)]
    others: dict[str, tuple[str, str]] = {}
    for k, cell in enumerate(cells):
        codes, scales = parts(31 + k, slice(60 - 10 * k, 64))
        _OtherYear.images[f"{cell.name}/e"] = codes
        _OtherYear.images[f"{cell.name}/s"] = scales
        others[cell.name] = (f"{cell.name}/e", f"{cell.name}/s")
    layer = EmbeddingChange(resolve=others.get, item_cell=item_cell, reader=_OtherYear)
    out = layer(img)

    values, valid = dequantised(img)  # the whole tile at once, as before the row bands
    other = np.full(values.shape, np.nan, dtype=np.float32)
    other_valid = np.zeros(valid.shape, dtype=bool)
    for cell in [GridCell.parse(item_cell)] if item_cell else cells:
        hrefs = others.get(cell.name)
        if hrefs is None:
            continue
        code_img, scale_img = (_OtherYear.images[h] for h in hrefs)
        codes = np.moveaxis(np.ma.getdata(code_img.array), 0, -1)
        masked = np.ma.getmaskarray(code_img.array).any(axis=0)
        masked |= np.ma.getmaskarray(scale_img.array)[0]
        inside = np.ones(valid.shape, dtype=bool)
        if item_cell is None:  # a mosaic pixel comes from its own cell
            lons = bounds[0] + (np.arange(W) + 0.5) * (bounds[2] - bounds[0]) / W
            inside = np.broadcast_to(np.floor(lons * 10) == round(cell.bounds[0] * 10), (H, W))
        vals, ok = dequantize(codes, embeddings_quantization(), np.ma.getdata(scale_img.array)[0])
        ok &= ~masked & inside
        other[ok] = vals[ok]
        other_valid |= ok
    dist, both = cosine_distance(values, other, valid & other_valid)
    want = np.where(both, dist, 0).astype(np.float32)
    assert both.any() and not both.all()
    assert np.array_equal(np.ma.getdata(out.array)[0], want)
    assert np.array_equal(~np.ma.getmaskarray(out.array)[0], both)


def rasterio_crs(code: str) -> Any:
    from rasterio.crs import CRS

    return CRS.from_string(code)

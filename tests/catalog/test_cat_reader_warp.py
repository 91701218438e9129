"""``catalog.reader.warp`` against GDAL: a COG on a real tile's UTM grid whose pixels hold their
own row and column (overviews by nearest, so an overview pixel holds the full-resolution pixel
it came from). rio-tiler's tile of it names, per output pixel, the source pixel GDAL chose;
the plan must name the same one everywhere, and agree on which pixels are inside except for
a few centres within rounding distance of the image's edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rio_tiler.io import Reader
from rio_tiler.utils import get_vrt_transform

from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.reader.tiff import blocks_of
from tessera_stac.catalog.reader.warp import choose_level, plan_warp, read_planned
from tessera_stac.publisher.embeddings.georef import rebuild_georef

TMS = morecantile.tms.get("WebMercatorQuad")
NODATA = 65535
#: at most this share of a tile's pixels may differ in being inside (edge rounding)
MAX_EDGE = 0.0005


@pytest.fixture(scope="module")
def index_cog(tmp_path_factory: Any) -> Path:
    georef = rebuild_georef(GridCell.containing(72.05, 21.85))
    h, w = georef.shape
    path = tmp_path_factory.mktemp("warp") / "index.tif"
    rows, cols = np.mgrid[0:h, 0:w].astype(np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", height=h, width=w, count=2, dtype="uint16", nodata=NODATA,
        crs=f"EPSG:{georef.epsg}", transform=Affine(*georef.transform), tiled=True,
        blockxsize=64, blockysize=64, compress="zstd", interleave="pixel",
    ) as dst:  # fmt: skip
        dst.write(np.stack([rows, cols]))
        dst.build_overviews([2, 4, 8], Resampling.nearest)
    return path


def tiles_of(path: Path, zoom: int, n: int) -> list[Any]:
    with rasterio.open(path) as ds:
        bounds = transform_bounds(ds.crs, 4326, *ds.bounds)
    tiles = list(TMS.tiles(*bounds, zooms=[zoom]))
    step = max(1, len(tiles) // n)
    return tiles[::step][:n]


@pytest.mark.parametrize(
    ("zoom", "size", "indexes"),
    [(z, 256, None) for z in (11, 12, 13, 14, 15, 16)]
    + [(z, 256, (2,)) for z in (12, 13, 14)]
    + [(13, 300, None), (13, 300, (1,)), (14, 512, None)],
)
def test_plan_picks_gdal_pixels(index_cog: Path, zoom: int, size: int, indexes: Any) -> None:
    edge = pixels = covered = 0
    for tile in tiles_of(index_cog, zoom, 6):
        with Reader(str(index_cog)) as src:
            if not src.tile_exists(tile.x, tile.y, tile.z):
                continue
            img = src.tile(tile.x, tile.y, tile.z, tilesize=size, indexes=indexes)
            ds = src.dataset
            vt, vw, vh = get_vrt_transform(
                ds, tuple(TMS.xy_bounds(tile)), size, size, dst_crs=TMS.rasterio_crs
            )
            blocks = blocks_of(ds)
            assert blocks is not None
            plan = plan_warp(
                ds.crs, tuple(ds.transform)[:6], blocks.levels, TMS.rasterio_crs,
                tuple(vt)[:6], (vw, vh), (size, size), all_bands=indexes is None,
            )  # fmt: skip
            assert plan is not None
            source = blocks_of(ds, plan.level)
            assert source is not None
            bands = None if indexes is None else np.asarray(indexes) - 1
            got = np.moveaxis(read_planned(source, plan, NODATA, bands), -1, 0)
        ref = np.ma.getdata(img.array)
        ref_inside = ~np.ma.getmaskarray(img.array)[0]
        both = ref_inside & plan.inside
        covered += int(both.sum())
        # the same source pixel wherever both read one
        assert np.array_equal(got[:, both], ref[:, both]), f"z{zoom} {tile}: other pixels"
        edge += int((ref_inside != plan.inside).sum())
        pixels += ref_inside.size
    print(f"z{zoom} {size}px bands={indexes}: {edge} of {pixels} pixels differ at the edge")
    assert covered > 0.1 * pixels, "too few pixels compared"
    assert edge <= MAX_EDGE * pixels


def test_overview_choice() -> None:
    levels = ((1128, 1056), (564, 528), (282, 264), (141, 132))
    assert choose_level((256, 256), (256, 256), levels) == 0  # over-zoom: full resolution
    assert choose_level((400, 400), (256, 256), levels) == 0  # 1.56 x 1.2 < 2
    assert choose_level((453, 453), (256, 256), levels) == 1  # 1.77 x 1.2 >= 2
    assert choose_level((907, 907), (256, 256), levels) == 2
    assert choose_level((5000, 5000), (256, 256), levels) == 3  # nothing coarser
    assert choose_level((427, 427), (256, 256), levels) is None  # at GDAL's threshold
    assert choose_level((512, 200), (256, 256), levels) is None  # not a tile read

"""Fake embedding items without rasters: the one builder tests, benches and catalogues use.

:func:`fake_tile` makes the :class:`PublishedTile` record a publisher run would have handed the
item builder (``catalog.stac.create_item``), with invented sizes and checksums unless given;
:func:`fake_item` is its item as a dict. The synthetic catalogue (``samples/catalog.py``), the
benchmarks and the test fixtures all build their items here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.model import AssetRecord, GridCell, PixelCounts, PublishedTile
from tessera_stac.catalog.profile import EMBEDDINGS, SCALES
from tessera_stac.catalog.stac import create_item, default_collection_id

FAKE_CHECKSUM = "1220" + "0" * 64
FAKE_PROCESSED = datetime(2025, 1, 1, tzinfo=UTC)
Transform6 = tuple[float, float, float, float, float, float]


def fake_assets(size: int = 1000, checksum: str = FAKE_CHECKSUM) -> dict[str, AssetRecord]:
    """Records of the two COG assets (``./embeddings.tif``, ``./scales.tif``), not written."""
    return {
        p.asset_key: AssetRecord(
            p.asset_key, f"./{p.filename}", p.media_type, size, checksum, p.roles
        )
        for p in (EMBEDDINGS, SCALES)
    }


def fake_tile(
    cell: GridCell,
    year: int,
    *,
    collection_id: str | None = None,
    model_version: str = "v1",
    model_name: str = c.MODEL_NAME,
    grid: tuple[int, Transform6, tuple[int, int]] | None = None,
    assets: Mapping[str, AssetRecord] | None = None,
    sources: Sequence[str] = (),
    counts: PixelCounts | None = None,
    processed: datetime = FAKE_PROCESSED,
    software: Mapping[str, str] | None = None,
    georef_from: str = "landmask",
) -> PublishedTile:
    """A published (tile, year) as the item builder sees it, without any file.

    Args:
        cell: the 0.1° cell.
        year: the embedding year.
        collection_id: default ``tessera-embeddings-{model_version}``.
        model_version, model_name: the model.
        grid: ``(epsg, transform, (height, width))``; default the tile's real grid rebuilt
            from the cell's corners (DESIGN §1).
        assets: asset records; default :func:`fake_assets`.
        sources: source hrefs (``via`` links when public).
        counts: valid/invalid pixels; default all valid.
        processed: processing time.
        software: ``processing:software``.
        georef_from: where the grid came from (``landmask`` or ``rebuilt``).
    """
    if grid is None:
        from tessera_stac.publisher.embeddings.georef import rebuild_georef

        georef = rebuild_georef(cell)
        grid = (georef.epsg, georef.transform, georef.shape)
    epsg, transform, shape = grid
    return PublishedTile(
        cell=cell,
        year=year,
        collection_id=collection_id or default_collection_id(model_version),
        model_name=model_name,
        model_version=model_version,
        epsg=epsg,
        transform=transform,
        shape=shape,
        assets=dict(assets if assets is not None else fake_assets()),
        sources=tuple(sources),
        counts=counts or PixelCounts(valid=shape[0] * shape[1], invalid=0),
        processed=processed,
        software=dict(software or {}),
        georef_from=georef_from,
    )


def fake_item(lon: float, lat: float, year: int, **options: Any) -> dict[str, Any]:
    """The item dict (relative links, no self link) of the cell holding ``(lon, lat)``.

    ``options`` are :func:`fake_tile`'s keyword arguments.
    """
    tile = fake_tile(GridCell.containing(lon, lat), year, **options)
    return dict(create_item(tile).to_dict(include_self_link=False, transform_hrefs=False))

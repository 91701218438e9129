"""Pure STAC builders: no I/O, no clock (times are passed in).

``create_item(tile)`` turns what a publisher run returns (:class:`PublishedTile`) into an Item.
(The catalog issue grows this module: collections, the MLM model item, our extension.)
"""

from __future__ import annotations

from datetime import UTC, datetime

import pystac

from tessera_stac.catalog.model import PublishedTile


def create_item(tile: PublishedTile) -> pystac.Item:
    """Build the STAC Item of one published (tile, year).

    Asset hrefs are taken as recorded in ``tile.assets`` (relative to the item's folder when
    the publisher wrote them so).
    """
    west, south, east, north = tile.cell.bounds
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    start = datetime(tile.year, 1, 1, tzinfo=UTC)
    end = datetime(tile.year, 12, 31, 23, 59, 59, tzinfo=UTC)
    item = pystac.Item(
        id=tile.item_id,
        geometry=geometry,
        bbox=[west, south, east, north],
        datetime=start,
        start_datetime=start,
        end_datetime=end,
        properties={},
        collection=tile.collection_id,
    )
    item.properties["proj:code"] = f"EPSG:{tile.epsg}"
    item.properties["proj:shape"] = list(tile.shape)
    item.properties["proj:transform"] = list(tile.transform)
    for key, record in tile.assets.items():
        asset = pystac.Asset(
            href=record.href, media_type=record.media_type, roles=list(record.roles)
        )
        asset.extra_fields["file:size"] = record.size
        asset.extra_fields["file:checksum"] = record.checksum
        item.add_asset(key, asset)
    return item

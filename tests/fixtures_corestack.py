"""Reusable pytest fixtures of the corestack area (registered in tests/conftest.py).

* ``bhavnagar_geojson``: the real CoRE Stack MWS layer (116 MWS, straddles 72°E), read-only.
* ``corestack_sample``: the real CoRE Stack static catalog sample folder, read-only.
* ``bhavnagar_frame``: the layer as a GeoDataFrame (session; copy before changing it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corestack"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} (shared reference data beside the checkout) is missing")
    return path


@pytest.fixture(scope="session")
def bhavnagar_geojson() -> Path:
    """Path of the real Bhavnagar MWS layer (GeoServer WFS GeoJSON with a legacy crs)."""
    return _need(SHARED_DATA / "gujarat_bhavnagar_bhavnagar_mws_terrain.geojson")


@pytest.fixture(scope="session")
def corestack_sample() -> Path:
    """Folder of the real CoRE Stack static catalog sample (with its defects)."""
    return _need(SHARED_DATA / "static-catalog-sample")


@pytest.fixture(scope="session")
def bhavnagar_frame(bhavnagar_geojson: Path) -> Any:
    """The Bhavnagar layer read with geopandas (EPSG:4326)."""
    import geopandas as gpd

    return gpd.read_file(bhavnagar_geojson)


# ----------------------------------------------------------------------- the join
@pytest.fixture(scope="session")
def bhavnagar_join(published_sample: Any, bhavnagar_geojson: Path) -> Any:
    """``(layer, tiles, JoinResult)``: the real Bhavnagar layer joined with the publisher's
    ``published_sample`` (two real-size tiles either side of 72°E, 2024)."""
    from tessera_stac.publisher.join import cells_covering, find_tiles_local, join_embeddings
    from tessera_stac.publisher.watersheds import read_mws_layer

    layer = read_mws_layer(bhavnagar_geojson)
    year = published_sample.year
    tiles = find_tiles_local(published_sample.dest, year, cells_covering(layer.bbox))
    return layer, tiles, join_embeddings(layer.frame, tiles, year)

"""watersheds join as one task per tile on Dask: the same table as the in-process join."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera_stac.cli.scale import run_join
from tessera_stac.publisher.engines.local import open_engine
from tessera_stac.publisher.join.join import cells_covering, find_tiles_local, join_embeddings
from tessera_stac.publisher.watersheds.layer import read_mws_layer
from tests.fixtures_corestack import JOIN_TEST_YEAR as YEAR

#: a Dask cluster joining real-size tiles
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layer_and_tiles(bhavnagar_geojson: Path, join_tiles: Path) -> tuple[Any, list[Any]]:
    layer = read_mws_layer(bhavnagar_geojson)
    found = find_tiles_local(join_tiles, YEAR, cells_covering(layer.bbox))
    assert {t.epsg for t in found} == {32642, 32643}  # two UTM zones
    return layer, found


def _same(a: Any, b: Any) -> None:
    ta, tb = a.table, b.table
    assert list(ta["uid"]) == list(tb["uid"])
    for col in ("count", "pixels", "flag", "missing_cells"):
        assert list(ta[col]) == list(tb[col]), col
    cols = [c for c in ta.columns if c.startswith("A") and c[1:].isdigit()]
    assert len(cols) == 128
    np.testing.assert_allclose(
        ta[cols].to_numpy(np.float64), tb[cols].to_numpy(np.float64), rtol=1e-6, equal_nan=True
    )
    assert sorted(t.item_id for t in a.tiles) == sorted(t.item_id for t in b.tiles)
    assert a.missing_cells == b.missing_cells


def test_join_on_dask_equals_the_in_process_join(layer_and_tiles: tuple[Any, list[Any]]) -> None:
    layer, found = layer_and_tiles
    reference = join_embeddings(layer.frame, found, YEAR)
    assert int(reference.table["count"].sum()) > 0
    done: list[str] = []
    # through the CLI's plumbing: ``watersheds join --engine dask --workers 2``
    on_dask = run_join("dask", None, 2, layer.frame, found, YEAR, lambda p: done.append(p.item_id))
    assert sorted(done) == sorted(t.item_id for t in found)
    _same(on_dask, reference)


def test_engine_choice() -> None:
    from tessera_stac.catalog.errors import ConfigurationError
    from tessera_stac.publisher.engines.local import SerialEngine

    with open_engine("serial", None, None) as eng:
        assert isinstance(eng, SerialEngine)
    with (
        pytest.raises(ConfigurationError, match="must be serial, process or dask"),
        open_engine("spark", None, None),
    ):
        pass
    with (
        pytest.raises(ConfigurationError, match="tcp://host:port"),
        open_engine("serial", None, "localhost:8786"),
    ):
        pass

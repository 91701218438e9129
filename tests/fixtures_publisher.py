"""Reusable pytest fixtures of the publisher area (registered in tests/conftest.py).

``published_sample`` (session): two real-size synthetic tiles straddling the 72°E UTM zone
boundary (``grid_71.95_21.85`` in EPSG:32642, ``grid_72.05_21.85`` in EPSG:32643), year 2024,
generated in geotessera's layout with landmasks and published locally. Other areas (API,
CoRE Stack join, catalog) reuse it; its shape is stable:

* ``dest``: root of the published tree (``{collection}/{year}/{grid}/...``);
* ``source``: root of the generated geotessera-layout tiles;
* ``tiles``: the :class:`~tessera_stac.catalog.model.PublishedTile` of each tile;
* ``items``: the item JSON paths (same order as ``tiles``);
* ``collection`` / ``year``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tessera_stac.catalog.model import GridCell, PublishedTile

SAMPLE_GRIDS = ("grid_71.95_21.85", "grid_72.05_21.85")
SAMPLE_YEAR = 2024


@dataclass(frozen=True)
class PublishedSample:
    """What ``published_sample`` made (see the module docstring)."""

    dest: Path
    source: Path
    tiles: tuple[PublishedTile, ...]
    items: tuple[Path, ...]
    collection: str
    year: int


def publish_sample(
    base: Path,
    grids: tuple[str, ...] = SAMPLE_GRIDS,
    year: int = SAMPLE_YEAR,
) -> PublishedSample:
    """Generate ``grids`` for ``year`` under ``base/source`` and publish to ``base/published``."""
    from tessera_stac.publisher.embeddings import run, tiles
    from tessera_stac.publisher.samples import tiles as sample

    source, dest = base / "source", base / "published"
    cells = [GridCell.parse(g) for g in grids]
    for cell in cells:
        sample.write_tile(source, cell, year)
    report = run.publish(
        tiles.sources_for(str(source), cells, [year]),
        str(dest),
        engine=None,  # serial: faster for two tiles than a pool, the other worker busy
        report=None,
    )
    if report.failed:
        raise RuntimeError(f"published_sample failed: {[o.reason for o in report.failed]}")
    by_grid = {t.cell.name: t for t in report.published}
    ordered = tuple(by_grid[g] for g in grids)
    items = tuple(
        dest / t.collection_id / str(t.year) / t.cell.name / f"{t.item_id}.json" for t in ordered
    )
    return PublishedSample(
        dest=dest,
        source=source,
        tiles=ordered,
        items=items,
        collection=ordered[0].collection_id,
        year=year,
    )


@pytest.fixture(scope="session")
def published_sample(build_once: Callable[..., Any]) -> PublishedSample:
    """Two real-size tiles across the 72°E UTM boundary, published locally (session; built
    once for all the workers of the run, which only read it)."""
    sample: PublishedSample = build_once("published-sample", publish_sample)
    return sample

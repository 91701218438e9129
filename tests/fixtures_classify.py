"""Fixtures of the classify area (registered in tests/conftest.py).

``landcover_sample`` (session): land-cover sample tiles (``SampleOptions.landcover``) of the
two cells across the 72°E UTM zone boundary, cropped to 500 x 500 px (5 km squares, so the
labels are dense enough for spatial leakage to show), years 2024 and 2025, 120 labels per
class drawn in 2024 with their truth rasters, published locally with a process pool, and its
static catalog built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tessera_stac.catalog.model import GridCell

LANDCOVER_GRIDS = ("grid_71.95_21.85", "grid_72.05_21.85")
LANDCOVER_YEARS = (2024, 2025)
LANDCOVER_CROP = (500, 500)
LABELS_PER_CLASS = 120


@dataclass(frozen=True)
class LandcoverSample:
    """What ``landcover_sample`` made."""

    source: Path  # generated tiles (geotessera layout) + labels/ + truth/
    dest: Path  # the published catalog (do not write into it: copy it first)
    labels: Path  # GeoJSON points, property ``class``
    truth: dict[str, Path]  # grid -> truth GeoTIFF (2024)
    year: int


def make_landcover_sample(base: Path) -> LandcoverSample:
    """Generate, publish and return the land-cover sample under ``base``."""
    from tessera_stac.catalog.static import build_static_catalog
    from tessera_stac.catalog.store import open_store
    from tessera_stac.publisher.embeddings import run, tiles
    from tessera_stac.publisher.engines.local import ProcessEngine
    from tessera_stac.publisher.samples.landcover import generate_landcover
    from tessera_stac.publisher.samples.tiles import SampleOptions

    source, dest = base / "source", base / "published"
    cells = [GridCell.parse(g) for g in LANDCOVER_GRIDS]
    made = generate_landcover(
        source,
        cells,
        LANDCOVER_YEARS,
        per_class=LABELS_PER_CLASS,
        options=SampleOptions(crop=LANDCOVER_CROP),
    )
    report = run.publish(
        tiles.sources_for(str(source), cells, list(LANDCOVER_YEARS)),
        str(dest),
        engine=ProcessEngine(2),
        report=None,
    )
    if report.failed:
        raise RuntimeError(f"landcover_sample failed: {[o.reason for o in report.failed]}")
    build_static_catalog(open_store(str(dest)))  # collections, the TESSERA model, the root
    return LandcoverSample(source, dest, made.labels, made.truth, LANDCOVER_YEARS[0])


@pytest.fixture(scope="session")
def landcover_sample(open_tmp: Callable[[str], Path]) -> LandcoverSample:
    """Land-cover sample tiles, labels and truth, published (session; read-only)."""
    return make_landcover_sample(open_tmp("landcover"))


@pytest.fixture
def landcover_catalog(landcover_sample: LandcoverSample, tmp_path: Path) -> Path:
    """A private copy of the published land-cover catalog (tests write heads into it)."""
    import shutil

    dest = tmp_path / "published"
    shutil.copytree(landcover_sample.dest, dest)
    return dest

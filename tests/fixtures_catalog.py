"""Reusable pytest fixtures of the catalog area (registered in tests/conftest.py).

* ``--update-golden``: rewrite the golden JSON files under ``tests/catalog/golden/`` instead of
  comparing against them (``golden(name, obj)`` fixture).
* ``make_tile(...)``: a :class:`PublishedTile` for a grid cell and year with exact TESSERA
  georeferencing (no I/O).
* ``our_schema``: the embedding extension schema as a dict, and ``schema_errors(obj)``: its
  jsonschema errors (our schema only, no network).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "catalog" / "golden"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="catalog tests: rewrite golden files in tests/catalog/golden instead of comparing",
    )


def dumps(obj: Any) -> str:
    """The canonical JSON text of golden files: sorted keys, indent 2, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """``golden(name, obj)``: compare ``obj`` with ``golden/<name>.json`` (or rewrite it)."""
    update = bool(request.config.getoption("--update-golden"))

    def check(name: str, obj: Any) -> None:
        path = GOLDEN_DIR / f"{name}.json"
        text = dumps(obj)
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        if not path.is_file():
            pytest.fail(f"{path} is missing: run pytest with --update-golden to create it")
        assert json.loads(text) == json.loads(path.read_text()), (
            f"{name} differs from {path}; if the change is intended rerun with --update-golden"
        )

    return check


def utm_georef(
    lon: float, lat: float
) -> tuple[int, tuple[float, float, float, float, float, float], tuple[int, int]]:
    """(epsg, transform, shape) of a grid cell, rebuilt the way DESIGN §1 describes."""
    from pyproj import Transformer

    from tessera_stac.catalog.model import GridCell

    cell = GridCell(lon, lat)
    to_utm = Transformer.from_crs(4326, cell.utm_epsg, always_xy=True)
    w, s, e, n = cell.bounds
    corners = {(x, y): to_utm.transform(x, y) for x in (w, e) for y in (s, n)}
    x0 = min(corners[(w, s)][0], corners[(w, n)][0])
    y0 = max(corners[(w, n)][1], corners[(e, n)][1])
    xmax = max(p[0] for p in corners.values())
    ymin = min(p[1] for p in corners.values())
    shape = (round((y0 - ymin) / 10), round((xmax - x0) / 10))
    return cell.utm_epsg, (10.0, 0.0, x0, 0.0, -10.0, y0), shape


@pytest.fixture(scope="session")
def make_tile() -> Callable[..., Any]:
    """Factory of :class:`PublishedTile` objects (deterministic; sizes/checksums invented)."""
    from tessera_stac.catalog.model import AssetRecord, GridCell, PixelCounts, PublishedTile
    from tessera_stac.publisher.samples.items import fake_tile

    def make(
        grid: str = "grid_0.15_52.05",
        year: int = 2024,
        model_version: str = "v1",
        shape: tuple[int, int] | None = None,
        transform: tuple[float, float, float, float, float, float] | None = None,
    ) -> PublishedTile:
        cell = GridCell.parse(grid)
        epsg, tr, sh = utm_georef(cell.lon, cell.lat)
        assets = {
            "embeddings": AssetRecord(
                "embeddings",
                "./embeddings.tif",
                COG,
                1000 + year,
                "1220" + "5d" * 32,
                ("data", "embeddings"),
            ),
            "scales": AssetRecord(
                "scales",
                "./scales.tif",
                COG,
                200 + year,
                "1220" + "a7" * 32,
                ("data", "scales"),
            ),
            "preview": AssetRecord(
                "preview",
                "./preview.png",
                "image/png",
                30 + year,
                "1220" + "3c" * 32,
                ("overview", "visual"),
            ),
        }
        src = f"s3://tessera/npy/{model_version}/{year}/{grid}/"
        return fake_tile(
            cell,
            year,
            model_version=model_version,
            grid=(epsg, transform or tr, shape or sh),
            assets=assets,
            sources=(f"{src}{grid}.npy", f"{src}{grid}_scales.npy"),
            counts=PixelCounts(valid=math.prod(shape or sh) - 10, invalid=10),
            processed=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
            software={"tessera-stac": "0.1.0"},
        )

    return make


def example_tile() -> Any:
    """The tile behind ``schemas/examples/item.json`` (realistic sizes, sources, software)."""
    from tessera_stac.catalog.model import AssetRecord, GridCell, PixelCounts, PublishedTile

    cell = GridCell.parse("grid_0.15_52.05")
    epsg, transform, shape = utm_georef(cell.lon, cell.lat)
    transform = (10.0, 0.0, round(transform[2], 3), 0.0, -10.0, round(transform[5], 3))
    assets = {
        "embeddings": AssetRecord(
            "embeddings", "./embeddings.tif", COG, 98234567, "1220" + "5d" * 32,
            ("data", "embeddings"),
        ),
        "scales": AssetRecord(
            "scales", "./scales.tif", COG, 2345678, "1220" + "a7" * 32, ("data", "scales")
        ),
        "preview": AssetRecord(
            "preview", "./preview.png", "image/png", 345678, "1220" + "3c" * 32,
            ("overview", "visual"),
        ),
    }  # fmt: skip
    src = "https://dl.geotessera.org/v1/npy/v1/2024/grid_0.15_52.05/"
    return PublishedTile(
        cell=cell,
        year=2024,
        collection_id="tessera-embeddings-v1",
        model_name="TESSERA",
        model_version="v1",
        epsg=epsg,
        transform=transform,
        shape=shape,
        assets=assets,
        sources=(
            src + "grid_0.15_52.05.npy",
            src + "grid_0.15_52.05_scales.npy",
            "https://dl.geotessera.org/v1/landmasks/v1/grid_0.15_52.05.tiff",
        ),
        counts=PixelCounts(800000, 30000, 12, 29988),
        processed=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        software={"tessera-stac": "0.1.0", "rasterio": "1.4.4", "GDAL": "3.9.3"},
    )


@pytest.fixture(scope="session")
def our_schema() -> dict[str, Any]:
    """The embedding extension's JSON schema (the packaged file)."""
    from tessera_stac.catalog.embedding import schema_path

    loaded: dict[str, Any] = json.loads(schema_path().read_text())
    return loaded


@pytest.fixture(scope="session")
def schema_errors(our_schema: dict[str, Any]) -> Callable[[dict[str, Any]], list[Any]]:
    """``schema_errors(obj)``: every error of ``obj`` against our schema alone."""
    import jsonschema

    validator = jsonschema.Draft7Validator(our_schema)

    def errors(obj: dict[str, Any]) -> list[Any]:
        return sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))

    return errors


def wait_serving(url: str, proc: Any, what: str = "test server") -> None:
    """Wait until ``url`` answers (any HTTP status) from the server process ``proc``."""
    import time
    import urllib.error
    import urllib.request

    # only bounds a failure: a Python server process starting on a loaded machine needs
    # seconds to import uvicorn and starlette
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # e.g. 404 on a folder: the server answers
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)

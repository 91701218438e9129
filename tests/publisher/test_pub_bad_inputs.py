"""Bad inputs: each gives a clear per-tile error naming the file; the other tiles succeed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.embeddings import run, tiles
from tessera_stac.publisher.embeddings.georef import TileGeoref
from tessera_stac.publisher.samples import tiles as sample

YEAR = 2024
CROP = (48, 40)


def _good(root: Path, grid: str) -> sample.SampleFiles:
    return sample.write_tile(root, GridCell.parse(grid), YEAR, sample.SampleOptions(crop=CROP))


def _truncate(f: sample.SampleFiles) -> None:
    data = f.embeddings.read_bytes()
    f.embeddings.write_bytes(data[: len(data) // 2])


def _corrupt_header(f: sample.SampleFiles) -> None:
    data = bytearray(f.embeddings.read_bytes())
    data[:16] = b"this is not npy!"
    f.embeddings.write_bytes(bytes(data))


def _resave(path: Path, array: np.ndarray) -> None:
    np.save(path, array)


def _wrong_dtype(f: sample.SampleFiles) -> None:
    _resave(f.embeddings, np.load(f.embeddings).view(np.uint8))


def _wrong_rank(f: sample.SampleFiles) -> None:
    _resave(f.embeddings, np.load(f.embeddings)[..., 0])


def _wrong_dims(f: sample.SampleFiles) -> None:
    _resave(f.embeddings, np.ascontiguousarray(np.load(f.embeddings)[..., :64]))


def _scales_shape(f: sample.SampleFiles) -> None:
    _resave(f.scales, np.load(f.scales)[:-1])


def _scales_float64(f: sample.SampleFiles) -> None:
    _resave(f.scales, np.load(f.scales).astype(np.float64))


def _scales_per_dim_differ(f: sample.SampleFiles) -> None:
    s = np.load(f.scales)
    per_dim = np.repeat(s[..., None], 128, axis=2)
    per_dim[3, 4, 5] *= 2
    _resave(f.scales, per_dim)


def _missing_scales(f: sample.SampleFiles) -> None:
    f.scales.unlink()


def _landmask(f: sample.SampleFiles, epsg_delta: int = 0, extra_rows: int = 0) -> None:
    import rasterio

    assert f.landmask is not None
    with rasterio.open(f.landmask) as ds:
        t = tuple(ds.transform)[:6]
        epsg = ds.crs.to_epsg()
        h, w = ds.shape
    geo = TileGeoref(epsg + epsg_delta, t, h + extra_rows, w)  # type: ignore[arg-type]
    sample.write_landmask(f.landmask, geo, np.ones(geo.shape, np.uint8))


def _landmask_crs(f: sample.SampleFiles) -> None:
    _landmask(f, epsg_delta=1)


def _landmask_shape(f: sample.SampleFiles) -> None:
    _landmask(f, extra_rows=3)


# grid suffix -> (mutation, expected words in the reason)
BAD: dict[str, tuple[Callable[[sample.SampleFiles], None], tuple[str, ...]]] = {
    "grid_78.15_12.05": (_truncate, (".npy", "cannot read")),
    "grid_78.25_12.05": (_corrupt_header, (".npy", "cannot read")),
    "grid_78.35_12.05": (_wrong_dtype, ("dtype is uint8", "int8")),
    "grid_78.45_12.05": (_wrong_rank, ("shape", "(H, W, 128)")),
    "grid_78.55_12.05": (_wrong_dims, ("shape", "(48, 40, 64)")),
    "grid_78.65_12.05": (_scales_shape, ("_scales.npy", "does not match")),
    "grid_78.75_12.05": (_scales_float64, ("_scales.npy", "float64")),
    "grid_78.85_12.05": (_scales_per_dim_differ, ("_scales.npy", "per-dimension")),
    "grid_78.95_12.05": (_missing_scales, ("_scales.npy", "not found")),
    "grid_78.05_12.15": (_landmask_crs, (".tiff", "EPSG:32645", "UTM zone")),
    "grid_78.15_12.15": (_landmask_shape, (".tiff", "landmask shape", "(51, 40)")),
}


@pytest.fixture(scope="module")
def outcome_of(tmp_path_factory: pytest.TempPathFactory) -> dict[str, run.TileOutcome]:
    root = tmp_path_factory.mktemp("bad-inputs")
    src = root / "src"
    good = _good(src, "grid_78.05_12.05")
    for grid, (mutate, _words) in BAD.items():
        mutate(_good(src, grid))
    # (H, W, 128) scales, all equal per pixel: supported
    same = _good(src, "grid_78.25_12.15")
    np.save(same.scales, np.repeat(np.load(same.scales)[..., None], 128, axis=2))
    # bad scale values and a reserved code: masked and counted, not an error
    odd = _good(src, "grid_78.35_12.15")
    s = np.load(odd.scales)
    s[0, :4] = [np.nan, np.inf, -np.inf, -161685.0]
    s[1, :3] = [3.4028235e38, 1.0, 0.0]
    np.save(odd.scales, s)
    q = np.load(odd.embeddings)
    q[2, 0, 7] = -128
    np.save(odd.embeddings, q)
    # an unparsable name, found by discovery like any other tile
    bad_name = src / "global_0.1_degree_representation" / str(YEAR) / "grid_abc_12.05"
    bad_name.mkdir(parents=True)
    np.save(bad_name / "grid_abc_12.05.npy", np.load(good.embeddings))
    np.save(bad_name / "grid_abc_12.05_scales.npy", np.load(good.scales))
    sources = tiles.discover(str(src))
    report = run.publish(sources, str(root / "out"), report=None)
    return {o.grid: o for o in report.outcomes}


def test_good_tiles_succeed(outcome_of: dict[str, run.TileOutcome]) -> None:
    assert outcome_of["grid_78.05_12.05"].status == "ok"
    assert outcome_of["grid_78.25_12.15"].status == "ok"  # (H, W, 128) equal scales


@pytest.mark.parametrize("grid", sorted(BAD))
def test_bad_tile_fails_clearly(outcome_of: dict[str, run.TileOutcome], grid: str) -> None:
    outcome = outcome_of[grid]
    assert outcome.status == "failed"
    assert grid in outcome.reason  # names the file
    for word in BAD[grid][1]:
        assert word in outcome.reason, outcome.reason
    assert "internal error" not in outcome.reason


def test_unparsable_name(outcome_of: dict[str, run.TileOutcome]) -> None:
    outcome = outcome_of["grid_abc_12.05"]
    assert outcome.status == "failed"
    assert "grid_abc_12.05.npy" in outcome.reason and "not a TESSERA grid name" in outcome.reason


def test_bad_scales_are_masked_and_counted(outcome_of: dict[str, run.TileOutcome]) -> None:
    outcome = outcome_of["grid_78.35_12.15"]
    assert outcome.status == "ok", outcome.reason
    c = outcome.counts
    assert (c["scale_nonfinite"], c["scale_negative"], c["scale_huge"]) == (3, 1, 2)
    assert c["scale_zero"] == 1 and c["code_minus_128"] == 1
    assert c["sanitised"] == 8
    assert c["valid"] + c["invalid"] == CROP[0] * CROP[1]


def test_tile_without_landmask_is_flagged_or_refused(tmp_path: Path) -> None:
    """No landmask: published, but its item says ``tessera:landmask: false`` and the report
    warns (its water would read as valid embeddings); ``require_landmask`` refuses it."""
    import json

    src = tmp_path / "src"
    cell = GridCell.parse("grid_78.05_12.05")
    sample.write_tile(src, cell, YEAR, sample.SampleOptions(landmask=False))
    sources = tiles.discover(str(src))
    assert len(sources) == 1 and sources[0].landmask is None
    report = run.publish(sources, str(tmp_path / "out"), report=None)
    (outcome,) = report.outcomes
    assert outcome.status == "ok" and outcome.warnings == (run.NO_LANDMASK,)
    assert report.as_dict()["warnings"] == [f"{outcome.item_id}: {run.NO_LANDMASK}"]
    item = json.loads(next((tmp_path / "out").rglob(f"{outcome.item_id}.json")).read_text())
    assert item["properties"]["tessera:landmask"] is False
    refused = run.publish(sources, str(tmp_path / "out2"), report=None, require_landmask=True)
    (failed,) = refused.outcomes
    assert failed.status == "failed" and "--require-landmask" in failed.reason
    assert not list((tmp_path / "out2").rglob("*.json"))

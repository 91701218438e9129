"""``tessera-stac classify train|map`` and ``sample tiles --landcover`` as people run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tessera_stac.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_train_then_map_from_the_command_line(
    landcover_sample: Any, landcover_catalog: Path
) -> None:
    dest = str(landcover_catalog)
    trained = _cli(
        "classify", "train", str(landcover_sample.labels), "--year", "2024",
        "--name", "cli-probe", "--out", dest, "--colors", "forest=#1b7837", "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)["report"]
    assert report["labels"]["count"] == 600
    assert "tessera-models/cli-probe/cli-probe.json" in json.loads(trained.stdout)["written"]
    mapped = _cli(
        "classify", "map", "cli-probe", "--year", "2025", "--out", dest,
        "--grid", "grid_72.05_21.85", "--workers", "1", "--json",
    )  # fmt: skip
    assert mapped.returncode == 0, mapped.stderr
    result = json.loads(mapped.stdout)
    assert result["totals"] == {"ok": 1, "skipped": 0, "failed": 0}
    item = landcover_catalog / "tessera-classes-cli-probe" / "grid_72.05_21.85_2025"
    assert (item / "classes.tif").is_file() and (item / "grid_72.05_21.85_2025.json").is_file()
    missing = _cli("classify", "map", "nope", "--year", "2024", "--out", dest)
    assert missing.returncode == 3 and "no head 'nope'" in missing.stderr


def test_sample_tiles_landcover_writes_labels_and_truth(tmp_path: Path) -> None:
    import rasterio

    out = _cli(
        "sample", "tiles", str(tmp_path), "--grid", "grid_72.05_21.85", "--years", "2024",
        "--landcover", "--labels-per-class", "7", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    labels = json.loads(Path(made["labels"]).read_text())["features"]
    assert len(labels) == 5 * 7
    assert {f["properties"]["class"] for f in labels} == {
        "cropland", "forest", "grassland", "built-up", "bare",
    }  # fmt: skip
    with rasterio.open(made["truth"]["grid_72.05_21.85"]) as ds:
        truth = ds.read(1)
        assert ds.nodata == 0 and set(map(int, set(truth.ravel().tolist()))) == {0, 1, 2, 3, 4, 5}
    assert (tmp_path / "global_0.1_degree_representation/2024/grid_72.05_21.85").is_dir()

"""CLI: ``sample tiles`` and ``publish`` argument handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tessera_stac.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sample_tiles_mirror_layout(tmp_path: Path) -> None:
    out = _cli(
        *("sample", "tiles", str(tmp_path), "--grid", "grid_25.05_70.05"),
        *("--years", "2023-2024", "--layout", "mirror", "--json"),
    )
    assert out.returncode == 0, out.stderr
    tiles = json.loads(out.stdout)["tiles"]
    assert [(t["grid"], t["year"]) for t in tiles] == [
        ("grid_25.05_70.05", 2023),
        ("grid_25.05_70.05", 2024),
    ]
    q = np.load(tmp_path / "npy/v1/2024/grid_25.05_70.05/grid_25.05_70.05.npy", mmap_mode="r")
    assert q.shape == (1127, 416, 128) and q.dtype == np.int8
    assert (tmp_path / "landmasks/v1/grid_25.05_70.05.tiff").is_file()


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    bad_bbox = _cli("sample", "tiles", str(tmp_path), "--bbox", "1,2,3")
    assert bad_bbox.returncode == 3 and "--bbox" in bad_bbox.stderr
    nothing = _cli("publish", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert nothing.returncode == 3 and "no TESSERA tiles" in nothing.stderr
    assert "Traceback" not in nothing.stderr
    helped = _cli("publish", "--help")
    assert helped.returncode == 0 and "--overwrite" in helped.stdout

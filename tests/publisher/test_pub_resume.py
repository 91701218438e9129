"""Resumable runs: SIGKILL mid-run then rerun completes only what is missing, leaves no temp
files; re-runs skip matching tiles, republish damaged ones, ``--overwrite`` forces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.embeddings import run, tiles
from tessera_stac.publisher.samples import tiles as sample

YEAR = 2024
GRIDS = [f"grid_{78.05 + 0.1 * i:.2f}_12.05" for i in range(6)]
ASSETS = {"embeddings.tif", "scales.tif", "preview.png"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tessera_stac.cli.main", *args]


def _items(dest: Path) -> list[Path]:
    return sorted(dest.glob("tessera-embeddings-v1/*/*/*.json"))


def _leftovers(dest: Path) -> list[Path]:
    return [
        p
        for p in dest.rglob("*")
        if "tmp" in p.name
        or (
            p.is_file()
            and p.parent.name.startswith("grid_")
            and p.name not in ASSETS
            and p.suffix != ".json"
        )
    ]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume-src")
    for grid in GRIDS:
        sample.write_tile(root, GridCell.parse(grid), YEAR, sample.SampleOptions(crop=(400, 360)))
    return root


@pytest.mark.slow  # real-size publish killed and resumed
def test_sigkill_then_rerun_completes(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    proc = subprocess.Popen(
        _cli("publish", str(source), str(dest), "-w", "2", "--report", str(tmp_path / "r1.json")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not _items(dest) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = _items(dest)
    assert 1 <= len(done_before) < len(GRIDS), "the kill should land mid-run"
    # whatever is visible is complete: an item exists only with all its assets beside it
    for item_path in done_before:
        item = json.loads(item_path.read_text())
        for asset in item["assets"].values():
            target = item_path.parent / asset["href"][2:]
            assert target.stat().st_size == asset["file:size"]
    for folder in (dest / "tessera-embeddings-v1" / str(YEAR)).iterdir():
        assert {p.name for p in folder.iterdir()} <= ASSETS | {f"{folder.name}_{YEAR}.json"}

    again = subprocess.run(
        _cli(
            "publish",
            str(source),
            str(dest),
            "-w",
            "2",
            "--json",
            "--report",
            str(tmp_path / "r2.json"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    totals = json.loads(again.stdout)["totals"]
    assert totals["skipped"] == len(done_before)
    assert totals["ok"] == len(GRIDS) - len(done_before) and totals["failed"] == 0
    assert len(_items(dest)) == len(GRIDS)
    assert not (dest / run.SCRATCH_DIR).exists()
    assert _leftovers(dest) == []


@pytest.mark.slow  # real-size publish run three times
def test_rerun_skips_repairs_and_overwrites(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    sources = tiles.discover(str(source), tile_filter=tiles.TileFilter(grids=frozenset(GRIDS[:3])))
    first = run.publish(sources, str(dest), report=None)
    assert first.totals["ok"] == 3
    second = run.publish(sources, str(dest), report=None)
    assert second.totals == {"ok": 0, "skipped": 3, "failed": 0}
    # damage one asset: that tile (only) is republished
    damaged = dest / "tessera-embeddings-v1" / str(YEAR) / GRIDS[1] / "scales.tif"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    third = run.publish(sources, str(dest), report=None)
    assert {o.grid: o.status for o in third.outcomes} == {
        GRIDS[0]: "skipped",
        GRIDS[1]: "ok",
        GRIDS[2]: "skipped",
    }
    fourth = run.publish(sources, str(dest), overwrite=True, report=None)
    assert fourth.totals["ok"] == 3
    assert _leftovers(dest) == []


def test_report_and_exit_code(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    broken = tmp_path / "list.txt"
    good = sample.tile_paths(source, GridCell.parse(GRIDS[0]), YEAR).embeddings
    broken.write_text(f"{good}\n{source}/nope/{YEAR}/grid_1.05_1.05/grid_1.05_1.05.npy\n")
    result = subprocess.run(
        _cli(
            *("publish", str(broken), str(dest), "--layout", "list", "-w", "1", "--json"),
            *("--landmasks", str(source / tiles.LANDMASK_DIR)),  # cropped tiles need them
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    by_id = {t["item_id"]: t for t in report["tiles"]}
    assert by_id[f"{GRIDS[0]}_{YEAR}"]["status"] == "ok"
    missing = by_id[f"grid_1.05_1.05_{YEAR}"]
    assert missing["status"] == "failed" and "not found" in missing["reason"]
    assert Path(report["report"]).is_file()
    ok = by_id[f"{GRIDS[0]}_{YEAR}"]
    assert ok["counts"]["valid"] > 0 and "embeddings_cog" in ok["timings"]


@pytest.mark.slow  # real-size publish killed
def test_sigkill_of_the_parent_alone_leaves_no_worker_and_no_scratch_in_dest(
    source: Path, tmp_path: Path
) -> None:
    """``kill -9`` of the ``publish`` process only (not its group): its workers follow within
    5 s, and DEST holds nothing but complete items (scratch lives beside DEST)."""
    from tessera_stac.publisher.lifeline import alive
    from tests.publisher.test_pub_engine import _children

    dest = tmp_path / "out"
    proc = subprocess.Popen(
        _cli("publish", str(source), str(dest), "-w", "2", "--report", str(tmp_path / "r.json")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    family: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        family |= _children(proc.pid)
        scratch = list(tmp_path.glob(".out*tmp/run-*/*"))
        if len(family) >= 3 and scratch:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the kill should land mid-run"
    family |= _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in family if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left behind 5 s after kill -9 of publish: {left}"
    assert not (dest / run.SCRATCH_DIR).exists()
    assert _leftovers(dest) == []
    for item_path in _items(dest):  # whatever is visible is complete
        item = json.loads(item_path.read_text())
        for asset in item["assets"].values():
            assert (item_path.parent / asset["href"][2:]).stat().st_size == asset["file:size"]

"""A publish worker's peak memory, measured on real-size tiles, stays under its declared
bound (``worker_memory_bound_mb``); the whole run under workers x bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tessera_stac.publisher.embeddings.run import worker_memory_bound_mb
from tests.memory import TreeWatch


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("engine", ["process", "dask"])
def test_publish_worker_memory_is_bounded(
    published_sample: Any, tmp_path: Path, engine: str
) -> None:
    cli = Path(sys.executable).parent / "tessera-stac"
    args = [str(cli), "publish", str(published_sample.source), str(tmp_path / "out")]
    args += ["--engine", engine, "--workers", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = TreeWatch(proc.pid)
    _, err = proc.communicate(timeout=900)
    watch.stop()
    assert proc.returncode == 0, err.decode()[-2000:]
    item = json.loads(published_sample.items[0].read_text())
    rows, cols = item["properties"]["proj:shape"]
    bound = worker_memory_bound_mb(rows * cols) * 2**20
    print(
        f"{engine}: peak one process {watch.peak_one / 2**20:.0f} MB, tree "
        f"{watch.peak_tree / 2**20:.0f} MB (bound {bound / 2**20:.0f} MB a worker)"
    )
    assert 0 < watch.peak_one < bound
    # the parent (and Dask's scheduler in it) plus two workers
    assert watch.peak_tree < 3 * bound

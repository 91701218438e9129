"""publish on Dask distributed, S3 to S3: a worker killed mid-run, every tile once, same bytes.

Two worker processes (one thread each) on a LocalCluster read tiles from the loopback S3 server
and write COGs, previews and items back to it. One worker process is SIGKILLed while tiles are
in flight; the nanny replaces it and the scheduler reruns what it held. The run must list every
tile exactly once, leave no partial or stray object, and write exactly the bytes a
single-process run writes.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "tessera_stac.publisher.embeddings.run", reason="the publisher is not on this branch"
)

from tessera_stac.catalog.model import GridCell

#: a Dask cluster publishing S3 to S3 with a worker killed
pytestmark = pytest.mark.slow

GRIDS = ("grid_77.05_12.05", "grid_77.15_12.05", "grid_77.05_12.15")
YEARS = (2023, 2024)
CROP = (128, 160)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _upload_tree(client: Any, root: Path, bucket: str, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root)}")


def _objects(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/"
    ):
        for obj in page.get("Contents", []):
            key = obj["Key"][len(prefix) + 1 :]
            out[key] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def _comparable(objects: dict[str, bytes], prefix: str) -> dict[str, str]:
    """sha256 per key; run reports dropped, the run's own prefix blanked out of JSON."""
    out = {}
    for key, data in objects.items():
        if key.startswith("_reports/"):
            continue
        if key.endswith(".json"):
            data = data.replace(prefix.encode(), b"PREFIX")
        out[key] = hashlib.sha256(data).hexdigest()
    return out


def test_publish_on_dask_survives_a_killed_worker(s3: tuple[Any, str], tmp_path: Path) -> None:
    from tessera_stac.publisher.embeddings import run, tiles
    from tessera_stac.publisher.engines.dask_engine import DaskEngine
    from tessera_stac.publisher.engines.local import SerialEngine
    from tessera_stac.publisher.samples import tiles as sample

    server, bucket = s3
    client = server.client()
    settings = server.storage_settings()
    cells = [GridCell.parse(g) for g in GRIDS]
    local = tmp_path / "src"
    for cell in cells:
        for year in YEARS:
            sample.write_tile(local, cell, year, sample.SampleOptions(crop=CROP))
    _upload_tree(client, local, bucket, "src")
    source = f"s3://{bucket}/src"

    def sources() -> list[Any]:
        found = tiles.discover(source, "auto", tiles.TileFilter(), settings, None, None)
        assert len(found) == len(cells) * len(YEARS)
        return list(found)

    serial = run.publish(
        sources(),
        f"s3://{bucket}/serial",
        engine=SerialEngine(),
        settings=settings,
        now=NOW,
        report=None,
    )
    assert not serial.failed, [o.reason for o in serial.failed]

    killed: list[int] = []
    with DaskEngine(n_workers=2, threads_per_worker=1) as engine:
        pids = engine.client.run(os.getpid)
        assert len(pids) == 2

        def kill_one(_outcome: Any) -> None:
            if not killed:  # both workers hold tasks now: kill one mid-tile
                victim = sorted(pids.values())[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        dask_run = run.publish(
            sources(),
            f"s3://{bucket}/dask",
            engine=engine,
            settings=settings,
            now=NOW,
            report=None,
            on_done=kill_one,
        )
        after = engine.client.run(os.getpid)
    assert killed and killed[0] not in after.values()

    # every tile exactly once, none failed
    ids = Counter(o.item_id for o in dask_run.outcomes)
    expected = {f"{g}_{y}" for g in GRIDS for y in YEARS}
    assert set(ids) == expected and set(ids.values()) == {1}
    assert not dask_run.failed, [o.reason for o in dask_run.failed]

    # the same objects with the same bytes as the single-process run; nothing else
    a = _comparable(_objects(client, bucket, "serial"), f"s3://{bucket}/serial")
    b = _comparable(_objects(client, bucket, "dask"), f"s3://{bucket}/dask")
    assert sorted(a) == sorted(b)
    assert any(k.endswith("embeddings.tif") for k in a)
    differing = sorted(k for k in a if a[k] != b[k])
    assert not differing, differing
    # asset checksums recorded by the two runs agree too
    by_id = {t.item_id: t for t in serial.published}
    for tile in dask_run.published:
        ref = by_id[tile.item_id]
        assert {k: r.checksum for k, r in tile.assets.items()} == {
            k: r.checksum for k, r in ref.assets.items()
        }

"""S3 end to end on the loopback S3 server: publish S3 -> S3, GDAL reads the result via /vsis3/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from tessera_stac.catalog.model import GridCell
from tessera_stac.publisher.embeddings import run, tiles
from tessera_stac.publisher.samples import tiles as sample

YEAR = 2024
GRIDS = ["grid_78.05_12.05", "grid_-0.15_-0.05"]


def _upload_tree(client: Any, bucket: str, root: Path, prefix: str, public: bool = False) -> None:
    extra = {"ACL": "public-read"} if public else None
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            client.upload_file(str(path), bucket, key, ExtraArgs=extra)


def test_publish_s3_to_s3(s3: tuple[Any, str], tmp_path: Path) -> None:
    server, bucket = s3
    client = server.client()
    local = tmp_path / "src"
    for grid in GRIDS:
        sample.write_tile(
            local,
            GridCell.parse(grid),
            YEAR,
            sample.SampleOptions(crop=(200, 180), zero_fraction=0.05),
        )
    _upload_tree(client, bucket, local, "mirror")
    settings = server.storage_settings().model_copy(update={"multipart_threshold_mb": 1})

    sources = tiles.discover(f"s3://{bucket}/mirror", settings=settings)
    assert [s.grid for s in sources] == sorted(GRIDS)
    assert all(s.landmask and s.landmask.startswith("s3://") for s in sources)
    dest = f"s3://{bucket}/out"
    report = run.publish(sources, dest, settings=settings, report="")
    assert report.totals == {"ok": 2, "skipped": 0, "failed": 0}, [o.reason for o in report.failed]

    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]}
    for grid in GRIDS:
        folder = f"out/tessera-embeddings-v1/{YEAR}/{grid}"
        expected = {f"{folder}/{n}" for n in ("embeddings.tif", "scales.tif", "preview.png")}
        assert expected | {f"{folder}/{grid}_{YEAR}.json"} <= keys
        head = client.head_object(Bucket=bucket, Key=f"{folder}/embeddings.tif")
        assert head["ContentType"].startswith("image/tiff; application=geotiff")
        assert head["ETag"].strip('"').endswith("-1")  # multipart upload
        item = json.loads(
            client.get_object(Bucket=bucket, Key=f"{folder}/{grid}_{YEAR}.json")["Body"].read()
        )
        emb = item["assets"]["embeddings"]
        assert emb["file:checksum"] == "1220" + head["Metadata"]["sha256"]
        assert emb["file:size"] == head["ContentLength"]
        png = client.head_object(Bucket=bucket, Key=f"{folder}/preview.png")
        assert png["ContentType"] == "image/png"
        # GDAL reads the published COGs through /vsis3/ and they round-trip
        src = sample.tile_paths(local, GridCell.parse(grid), YEAR)
        q, s = np.load(src.embeddings), np.load(src.scales)
        # credentials reach GDAL through the environment (rasterio refuses them as options)
        gdal_env = {k: v for k, v in settings.gdal_env().items() if not k.endswith("_KEY")}
        gdal_env = {k: v for k, v in gdal_env.items() if "ACCESS_KEY" not in k}
        with rasterio.Env(**gdal_env):
            with rasterio.open(f"/vsis3/{bucket}/{folder}/embeddings.tif") as ds:
                codes = np.moveaxis(ds.read(), 0, -1)
            with rasterio.open(f"/vsis3/{bucket}/{folder}/scales.tif") as ds:
                scales = ds.read(1)
        valid = np.isfinite(scales)
        assert valid.sum() > 0
        got = codes[valid].astype(np.float32) * scales[valid][:, None]
        want = q[valid].astype(np.float32) * s[valid][:, None]
        assert np.array_equal(got, want)
    assert any(k.startswith("out/_reports/publish-") for k in keys)
    assert not any(".tmp" in k for k in keys)

    again = run.publish(sources, dest, settings=settings, report=None)
    assert again.totals == {"ok": 0, "skipped": 2, "failed": 0}


def test_anonymous_mirror_to_local(s3: tuple[Any, str], tmp_path: Path) -> None:
    """Unsigned reads of a public mirror (mirror layout) while writing elsewhere."""
    from tessera_stac.catalog.store_settings import StorageSettings

    server, bucket = s3
    local = tmp_path / "src"
    sample.write_tile(
        local, GridCell.parse(GRIDS[0]), YEAR, sample.SampleOptions(crop=(64, 64)), "mirror"
    )
    _upload_tree(server.client(), bucket, local, "pub", public=True)  # a public mirror
    anonymous = StorageSettings(endpoint_url=server.endpoint_url, anonymous=True)
    sources = tiles.discover(f"s3://{bucket}/pub", settings=anonymous)
    assert [s.grid for s in sources] == [GRIDS[0]]
    report = run.publish(sources, str(tmp_path / "out"), source_settings=anonymous, report=None)
    assert report.totals["ok"] == 1, [o.reason for o in report.failed]

"""Train and map against a catalog on S3 (the loopback S3 server), no local copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera_stac.catalog.heads import Head
from tessera_stac.publisher.classify.map import map_classes
from tessera_stac.publisher.classify.train import TrainOptions, train


@pytest.mark.slow
def test_train_and_map_on_s3(s3: tuple[Any, str], landcover_sample: Any) -> None:
    server, bucket = s3
    client = server.client()
    root = landcover_sample.dest
    for path in sorted(root.rglob("*")):
        if path.is_file() and "/2025/" not in path.as_posix():
            client.upload_file(str(path), bucket, f"cat/{path.relative_to(root).as_posix()}")
    settings = server.storage_settings()
    dest = f"s3://{bucket}/cat"
    result = train(landcover_sample.labels, dest, TrainOptions(name="remote", year=2024), settings)
    assert result.report["labels"]["vectors"] == 600
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="cat/")["Contents"]}
    assert {"cat/tessera-models/remote/head.json", "cat/tessera-models/remote/remote.json"} <= keys
    body = client.get_object(Bucket=bucket, Key="cat/tessera-models/remote/head.json")["Body"]
    assert Head.from_json(body.read()).to_json() == result.head.to_json()

    report = map_classes("remote", 2024, dest, settings=settings, grids=["grid_71.95_21.85"])
    assert report.totals == {"ok": 1, "skipped": 0, "failed": 0}, [o.reason for o in report.failed]
    item_key = "cat/tessera-classes-remote/grid_71.95_21.85_2024/grid_71.95_21.85_2024.json"
    item = json.loads(client.get_object(Bucket=bucket, Key=item_key)["Body"].read())
    assert item["properties"]["tessera:pixels"]["nodata"] > 0
    local = Path(landcover_sample.dest)
    # the same head on the local copy of the tile gives the same class counts
    from tessera_stac.catalog.reader import EmbeddingReader

    entry = local / "tessera-embeddings-v1/2024/grid_71.95_21.85/grid_71.95_21.85_2024.json"
    with EmbeddingReader(json.loads(entry.read_text()), self_href=str(entry)) as reader:
        values, valid = reader.read()
    classes, _ = result.head.predict(values, valid)
    counts = item["properties"]["tessera:pixels"]
    assert counts["nodata"] == int((classes == 0).sum())
    for cl in result.head.classes:
        assert counts[cl.name] == int(np.count_nonzero(classes == cl.value))
    assert map_classes("remote", 2024, dest, settings=settings).totals["skipped"] == 1

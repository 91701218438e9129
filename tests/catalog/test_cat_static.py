"""Real publisher output: items validate, the reader reproduces q*s, the static catalog builds
and validates, and the validate CLI reports errors with JSON paths and exit codes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest

from tessera_stac.catalog.reader import EmbeddingReader
from tessera_stac.catalog.stac import create_item
from tessera_stac.cli.main import main

SHARED_SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "stac-schemas"
Validate = Callable[[dict[str, Any]], None]


def json_tree(sample: Any, dest: Path) -> Path:
    """Copy only the item JSONs of the published tree (the build never reads the rasters)."""
    for item in sample.items:
        target = dest / item.relative_to(sample.dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(item, target)
    return dest


def test_published_items_are_create_item_output_and_valid(
    published_sample: Any, stac_validate: Validate
) -> None:
    for tile, path in zip(published_sample.tiles, published_sample.items, strict=True):
        on_disk = json.loads(path.read_text())
        stac_validate(on_disk)
        built = create_item(tile).to_dict(include_self_link=False, transform_hrefs=False)
        assert on_disk == built
        assert on_disk["properties"]["proj:code"] == f"EPSG:{tile.epsg}"
        assert on_disk["properties"]["proj:epsg"] == tile.epsg
        assert on_disk["properties"]["processing:datetime"] == pystac.utils.datetime_to_str(
            tile.processed
        )
        for key, asset in on_disk["assets"].items():
            assert asset["file:size"] == (path.parent / asset["href"]).stat().st_size, key


def _source(tile: Any, suffix: str) -> str:
    return next(s for s in tile.sources if s.endswith(suffix))


@pytest.mark.parametrize("index", [0, 1])
def test_reader_reproduces_publisher_round_trip(published_sample: Any, index: int) -> None:
    """Metadata-only reads equal the source's q*s bit for bit on every valid pixel."""
    import rasterio

    tile = published_sample.tiles[index]
    item = pystac.Item.from_file(str(published_sample.items[index]))
    codes = next(x for x in tile.sources if x.endswith(".npy") and not x.endswith("_scales.npy"))
    q = np.load(codes, mmap_mode="r")
    s = np.load(_source(tile, "_scales.npy"), mmap_mode="r")
    landmask_src = [x for x in tile.sources if x.endswith((".tif", ".tiff"))]
    h, w = tile.shape
    windows = [((0, 128), (0, 160)), ((h - 100, h), (w - 90, w)), ((h // 2, h // 2 + 64), (0, w))]
    with EmbeddingReader(item) as reader:
        assert reader.profile().shape == (h, w)
        for (r0, r1), (c0, c1) in windows:
            values, valid = reader.read(((r0, r1), (c0, c1)))
            qs = np.asarray(q[r0:r1, c0:c1]).astype(np.float32)
            ss = np.asarray(s[r0:r1, c0:c1], dtype=np.float32)
            expected = qs * ss[..., None]
            rule = np.isfinite(ss) & (ss > 0) & (ss < 1.0)
            if landmask_src:
                with rasterio.open(landmask_src[0]) as lm:
                    rule &= lm.read(1)[r0:r1, c0:c1] != 0
            np.testing.assert_array_equal(valid, rule)
            assert np.array_equal(values[valid].view(np.uint32), expected[valid].view(np.uint32)), (
                "dequantised values differ from q*s"
            )
            assert np.isnan(values[~valid]).all()


def test_read_point_on_published_tile(published_sample: Any) -> None:
    tile = published_sample.tiles[1]
    item = pystac.Item.from_file(str(published_sample.items[1]))
    lon, lat = tile.cell.lon, tile.cell.lat
    sample = EmbeddingReader(item).read_point(lon, lat)
    assert sample.inside
    assert sample.hrefs["codes"] == str(published_sample.items[1].parent / "embeddings.tif")
    if sample.valid:
        assert sample.vector is not None and sample.vector.shape == (128,)


def test_static_build_relative(
    published_sample: Any, tmp_path: Path, stac_validate: Validate, capsys: Any
) -> None:
    import pyarrow.parquet as pq

    root = json_tree(published_sample, tmp_path / "tree")
    before = {p: p.read_bytes() for p in root.rglob("*.json")}
    assert main(["catalog", "build", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["collections"] == {published_sample.collection: 2}
    assert report["items_rewritten"] == 0 and report["problems"] == []
    for path, data in before.items():
        assert path.read_bytes() == data  # the publisher's items were already in place
    jsons = sorted(root.rglob("*.json"))
    names = {p.relative_to(root).as_posix() for p in jsons}
    assert {"catalog.json", f"{published_sample.collection}/collection.json",
            "tessera-models/collection.json",
            "tessera-models/tessera-v1/tessera-v1.json"} <= names  # fmt: skip
    for path in jsons:
        stac_validate(json.loads(path.read_text()))
    cat = pystac.Catalog.from_file(str(root / "catalog.json"))
    ids = sorted(i.id for i in cat.get_items(recursive=True))
    assert ids == sorted([*(t.item_id for t in published_sample.tiles), "tessera-v1"])
    coll = cat.get_child(published_sample.collection)
    assert isinstance(coll, pystac.Collection)
    assert coll.assets["geoparquet-items"].href.endswith("items.parquet")
    table = pq.read_table(root / published_sample.collection / "items.parquet")
    assert sorted(table.column("id").to_pylist()) == sorted(
        t.item_id for t in published_sample.tiles
    )
    # idempotent: a second build writes the same bytes
    snapshot = {p: p.read_bytes() for p in jsons}
    assert main(["catalog", "build", str(root)]) == 0
    assert {p: p.read_bytes() for p in jsons} == snapshot


def test_static_build_absolute(
    published_sample: Any, tmp_path: Path, stac_validate: Validate, capsys: Any
) -> None:
    root = json_tree(published_sample, tmp_path / "tree")
    base = "https://data.example.org/tessera"
    args = ["catalog", "build", str(root), "--href-base", base, "--no-geoparquet"]
    assert main([*args, "--no-item-links"]) == 0
    capsys.readouterr()
    coll = json.loads((root / published_sample.collection / "collection.json").read_text())
    assert not [x for x in coll["links"] if x["rel"] == "item"]
    assert not list(root.rglob("*.parquet"))
    for path in root.rglob("*.json"):
        d = json.loads(path.read_text())
        stac_validate(d)
        key = path.relative_to(root).as_posix()
        self_links = [x["href"] for x in d["links"] if x["rel"] == "self"]
        assert self_links == [f"{base}/{key}"]
        assert all(x["href"].startswith(("https://", "/")) for x in d["links"]), key
        for asset in d.get("assets", {}).values():
            assert asset["href"].startswith("https://"), key
    item = json.loads(published_sample.items[0].read_text())
    rel = published_sample.items[0].relative_to(published_sample.dest).as_posix()
    rewritten = json.loads((root / rel).read_text())
    folder = rel.rsplit("/", 1)[0]
    assert rewritten["assets"]["embeddings"]["href"] == f"{base}/{folder}/embeddings.tif"
    model = next(x for x in rewritten["links"] if x["rel"] == "derived_from")
    assert model["href"] == f"{base}/tessera-models/tessera-v1/tessera-v1.json"
    assert model["mlm:name"] == "TESSERA"
    assert len(rewritten["links"]) == len(item["links"]) + 1


def test_static_build_skips_bad_item(published_sample: Any, tmp_path: Path, capsys: Any) -> None:
    root = json_tree(published_sample, tmp_path / "tree")
    bad = (
        root / published_sample.collection / "2024" / "grid_1.05_1.05" / "grid_1.05_1.05_2024.json"
    )
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert main(["catalog", "build", str(root)]) == 1
    out = capsys.readouterr().out
    assert "skipped" in out and "grid_1.05_1.05_2024.json" in out and "not readable JSON" in out
    coll = json.loads((root / published_sample.collection / "collection.json").read_text())
    assert len([x for x in coll["links"] if x["rel"] == "item"]) == 2
    assert (root / "catalog.json").is_file()


def test_static_build_on_s3(published_sample: Any, s3: Any, capsys: Any) -> None:
    server, bucket = s3
    client = server.client()
    for path in published_sample.items:
        key = "cat/" + path.relative_to(published_sample.dest).as_posix()
        client.upload_file(str(path), bucket, key)
    assert main(["catalog", "build", f"s3://{bucket}/cat", "--json"]) == 0
    capsys.readouterr()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"cat/{published_sample.collection}/collection.json" in keys
    assert f"cat/{published_sample.collection}/items.parquet" in keys
    root = json.loads(client.get_object(Bucket=bucket, Key="cat/catalog.json")["Body"].read())
    assert {x["href"] for x in root["links"] if x["rel"] == "child"} == {
        f"./{published_sample.collection}/collection.json",
        "./tessera-models/collection.json",
    }
    # and validate reads it back from S3, following the links
    args = ["validate", f"s3://{bucket}/cat/catalog.json", "-r", "--offline", "--json"]
    assert main([*args, "--schema-dir", str(SHARED_SCHEMAS)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 6 and {r["status"] for r in results} == {"valid"}
    assert main(["validate", f"s3://{bucket}/cat/nope.json", "--offline"]) == 3


# ---------------------------------------------------------------------- validate CLI
@pytest.fixture
def item_file(published_sample: Any, tmp_path: Path) -> Path:
    path = tmp_path / "item.json"
    shutil.copy(published_sample.items[0], path)
    return path


def test_validate_cli_valid(item_file: Path, capsys: Any) -> None:
    args = ["validate", str(item_file), "--schema-dir", str(SHARED_SCHEMAS), "--offline"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"VALID: {item_file}")


def test_validate_cli_invalid_with_json_paths(item_file: Path, capsys: Any) -> None:
    d = json.loads(item_file.read_text())
    d["properties"]["embedding:dimensions"] = "many"
    d["properties"]["proj:code"] = 4326
    d["properties"]["proj:epsg"] = "EPSG:4326"
    del d["assets"]["embeddings"]["embedding:quantization"]["scope"]
    item_file.write_text(json.dumps(d))
    args = ["validate", str(item_file), "--schema-dir", str(SHARED_SCHEMAS), "--offline"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID:")
    assert "$.properties[\"embedding:dimensions\"]: 'many' is not of type 'integer'" in out
    assert "$.assets.embeddings[\"embedding:quantization\"]: 'scope' is a required property" in out
    assert '$.properties["proj:code"]' in out and "projection/v1.2.0" in out
    assert "$.properties[\"proj:epsg\"]: 'EPSG:4326' is not of type 'integer', 'null'" in out
    assert main([*args, "--json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert results[0]["status"] == "invalid" and len(results[0]["errors"]) >= 3


def test_validate_cli_unreadable_and_missing_schema(
    item_file: Path, tmp_path: Path, capsys: Any
) -> None:
    assert main(["validate", str(tmp_path / "nope.json"), "--offline"]) == 3
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("error: ") and "nope.json" in out.err and "unreadable" in out.err
    assert len(out.err.strip().splitlines()) == 1
    empty = tmp_path / "schemas"
    empty.mkdir()
    # only our bundled schema is available: core is missing offline -> exit 3
    assert main(["validate", str(item_file), "--schema-dir", str(empty), "--offline"]) == 3
    assert "not in the schema directory" in capsys.readouterr().err


def test_validate_cli_recursive(published_sample: Any, tmp_path: Path, capsys: Any) -> None:
    root = json_tree(published_sample, tmp_path / "tree")
    assert main(["catalog", "build", str(root), "--no-geoparquet"]) == 0
    capsys.readouterr()
    args = ["validate", str(root / "catalog.json"), "-r", "--schema-dir", str(SHARED_SCHEMAS)]
    assert main([*args, "--offline", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 6 and {r["status"] for r in results} == {"valid"}


def test_static_catalog_loads_into_pgstac(
    published_sample: Any, tmp_path: Path, pg_dsn: str, capsys: Any
) -> None:
    """What ``catalog build`` writes is what the loader expects (collections + items)."""
    import psycopg

    from tessera_stac.catalog.pgstac.load import load

    root = json_tree(published_sample, tmp_path / "tree")
    assert main(["catalog", "build", str(root)]) == 0
    capsys.readouterr()
    load(pg_dsn, str(root / "catalog.json"))
    with psycopg.connect(pg_dsn) as conn:
        colls = {r[0] for r in conn.execute("SELECT id FROM pgstac.collections")}
        items = {r[0] for r in conn.execute("SELECT id FROM pgstac.items")}
    assert {published_sample.collection, "tessera-models"} <= colls
    assert {t.item_id for t in published_sample.tiles} | {"tessera-v1"} == items


def test_static_build_clear_errors(tmp_path: Path, capsys: Any) -> None:
    assert main(["catalog", "build", str(tmp_path / "missing")]) == 3
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["catalog", "build", str(tmp_path / "empty")]) == 3
    assert "no item JSONs" in capsys.readouterr().err
    assert not list((tmp_path / "empty").iterdir())  # nothing written
    assert main(["catalog", "build", str(tmp_path), "--href-base", "ftp://x"]) == 3
    assert "--href-base must be" in capsys.readouterr().err

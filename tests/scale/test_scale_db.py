"""A synthetic catalogue loads into pgSTAC partitioned by year, with typed, indexed queryables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench import bench_scale_db as bench
from tessera_stac.publisher.samples.catalog import SyntheticSpec, iter_ndjson

N_ITEMS = 10_000


@pytest.mark.slow  # 10,000 items loaded into pgSTAC
def test_10k_synthetic_items_load_partitioned_and_searchable(pg_dsn: str, tmp_path: Path) -> None:
    spec = SyntheticSpec(n_items=N_ITEMS, centre=bench.CENTRE, collection_id=bench.COLLECTION)
    bench.load_catalogue(pg_dsn, spec, tmp_path, "test")
    stats = bench.database_stats(pg_dsn)
    assert stats["items"] == N_ITEMS
    # one partition per year, every year present
    assert len(stats["partitions"]) == len(spec.years)
    assert stats["proj_code_indexes"] >= len(spec.years)
    assert stats["bytes_per_item"] > 0
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("SET search_path TO pgstac, public")
        per_year = dict(
            conn.execute(
                "SELECT extract(year FROM datetime)::int, count(*) FROM items GROUP BY 1"
            ).fetchall()
        )
        assert sum(per_year.values()) == N_ITEMS
        assert set(per_year) == set(spec.years)
        # a search through pgSTAC's own function: block + year + proj:code filter
        search: dict[str, Any] = {
            "collections": [bench.COLLECTION],
            "bbox": [78.5, 22.0, 79.0, 22.5],
            "datetime": "2020-01-01T00:00:00Z/2020-12-31T23:59:59Z",
            "filter-lang": "cql2-json",
            "filter": {"op": "=", "args": [{"property": "proj:code"}, "EPSG:32644"]},
            "limit": 100,
        }
        row = conn.execute("SELECT search(%s::jsonb)", (json.dumps(search),)).fetchone()
        assert row is not None
        found = row[0]["features"]
    expected = [
        json.loads(line)
        for line in iter_ndjson(spec)
        if '"2020-01-01T00:00:00Z"' in line and '"EPSG:32644"' in line
    ]
    # intersects is closed: cells touching the block's edges are found too
    w, s, e, n = search["bbox"]
    expected_ids = {
        i["id"]
        for i in expected
        if i["bbox"][0] <= e and i["bbox"][2] >= w and i["bbox"][1] <= n and i["bbox"][3] >= s
    }
    assert expected_ids, "the block should hold items"
    assert {f["id"] for f in found} == expected_ids


def test_proj_code_index_can_be_dropped_and_rebuilt(pg_dsn: str, tmp_path: Path) -> None:
    spec = SyntheticSpec(n_items=900, centre=bench.CENTRE, collection_id=bench.COLLECTION)
    bench.load_catalogue(pg_dsn, spec, tmp_path, "idx")
    assert bench.database_stats(pg_dsn)["proj_code_indexes"] >= len(spec.years)
    bench.set_proj_code_index(pg_dsn, on=False)
    assert bench.database_stats(pg_dsn)["proj_code_indexes"] == 0
    bench.set_proj_code_index(pg_dsn, on=True)
    stats = bench.database_stats(pg_dsn)
    assert stats["proj_code_indexes"] >= len(spec.years)
    assert stats["items"] == 900


def test_ordered_index_survives_index_maintenance(pg_dsn: str, tmp_path: Path) -> None:
    spec = SyntheticSpec(n_items=900, centre=bench.CENTRE, collection_id=bench.COLLECTION)
    bench.load_catalogue(pg_dsn, spec, tmp_path, "ord")
    bench.add_ordered_index(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'pgstac' "
            "AND indexdef LIKE '%%datetime DESC, id DESC%%'"
        ).fetchone()
    assert count is not None and count[0] >= len(spec.years)
    # dropping queryable indexes (pgSTAC's maintenance) must not trip over it
    bench.set_proj_code_index(pg_dsn, on=False)
    bench.set_proj_code_index(pg_dsn, on=True)
    assert bench.database_stats(pg_dsn)["proj_code_indexes"] >= len(spec.years)

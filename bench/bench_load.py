"""``tessera-stac load`` against raw ``pypgstac load items`` on the same NDJSON.

Both as command-line runs (interpreter start-up included for both) into fresh databases cloned
from one pgSTAC template on a throwaway cluster, in alternating rounds. Ours also loads the
collection, sets year partitioning, validates every item and registers queryables; the raw run
gets its collection (and year partitioning) beforehand, untimed. Method upsert for both.
Target: ours >= 0.8x raw items/s.

Results: ``bench/results/load.json`` and ``load.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench._support import COLLECTION, collection, synthetic_items, temp_cluster, write_ndjson

HERE = Path(__file__).resolve().parent
ITEMS = 5000
ROUNDS = 2


def _env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TESSERA_STAC_"))}
    env["TESSERA_STAC_DATABASE_URL"] = dsn
    env["PGSTAC_DSN"] = dsn
    return env


def _timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {proc.stderr[-2000:]}")
    return elapsed


def _count(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()
    return int(row[0]) if row else 0


def ours(cluster: Any, source: Path) -> float:
    """Seconds for ``tessera-stac load`` of collection + items into a fresh database."""
    with cluster.template_clone("bench_template", f"b_{uuid.uuid4().hex[:8]}") as dsn:
        args = [sys.executable, "-m", "tessera_stac.cli.main", "load", str(source)]
        seconds = _timed([*args, "--no-progress"], _env(dsn))
        assert _count(dsn) == ITEMS
    return seconds


def raw(cluster: Any, coll: Path, items: Path) -> float:
    """Seconds for ``pypgstac load items`` into a fresh database holding the collection."""
    import psycopg

    pypgstac = str(Path(sys.executable).parent / "pypgstac")
    with cluster.template_clone("bench_template", f"b_{uuid.uuid4().hex[:8]}") as dsn:
        load = [pypgstac, "load", "--dsn", dsn, "--method", "upsert"]
        _timed([*load, "collections", str(coll)], _env(dsn))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE pgstac.collections SET partition_trunc = 'year'")
        seconds = _timed([*load, "items", str(items)], _env(dsn))
        assert _count(dsn) == ITEMS
    return seconds


def main() -> None:
    import tempfile

    items = synthetic_items(ITEMS)
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        source = write_ndjson(tmp / "all.ndjson", [collection(), *items])
        coll = write_ndjson(tmp / "collection.ndjson", [collection()])
        only = write_ndjson(tmp / "items.ndjson", items)
        runs: dict[str, list[float]] = {"raw": [], "ours": []}
        for _ in range(ROUNDS):
            runs["raw"].append(raw(cluster, coll, only))
            runs["ours"].append(ours(cluster, source))
    best = {k: min(v) for k, v in runs.items()}
    rate = {k: round(ITEMS / v, 1) for k, v in best.items()}
    results = {
        "items": ITEMS,
        "collection": COLLECTION,
        "rounds": ROUNDS,
        "seconds": runs,
        "items_per_s": rate,
        "ratio": round(rate["ours"] / rate["raw"], 3),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    text = (
        "# Load benchmark: tessera-stac load vs pypgstac load items\n\n"
        f"{ITEMS} synthetic items (real item builder), upsert, fresh database per run, best of "
        f"{ROUNDS} alternating rounds, CLI start-up included for both.\n\n"
        "| tool | items/s | seconds per run |\n|---|---|---|\n"
        f"| pypgstac load items | {rate['raw']} | {', '.join(f'{s:.2f}' for s in runs['raw'])} |\n"
        f"| tessera-stac load | {rate['ours']} | "
        f"{', '.join(f'{s:.2f}' for s in runs['ours'])} |\n\n"
        f"Ratio ours/raw: **{results['ratio']}** (target >= 0.8). Ours also loads the "
        "collection, partitions it by year, validates each item and registers queryables.\n"
    )
    (out / "load.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

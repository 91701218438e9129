"""Shared pieces of the serving benchmarks: a throwaway cluster, synthetic items, servers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

COLLECTION = "tessera-embeddings-v1"


@contextlib.contextmanager
def temp_cluster() -> Iterator[Any]:
    """A fast (fsync off) local pgSTAC cluster in a temp dir, stopped and removed at the end."""
    from tessera_stac.catalog.pgstac.cluster import LocalCluster

    home = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    os.chmod(home, 0o755)
    cluster = LocalCluster(home, dbname="bench_template", fast=True)
    cluster.init()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


def collection() -> dict[str, Any]:
    """A minimal embedding collection."""
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": COLLECTION,
        "description": "benchmark collection",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2017-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


def synthetic_items(count: int, years: tuple[int, ...] = (2023, 2024)) -> list[dict[str, Any]]:
    """``count`` items from the real item builder, on a block of cells across 72°E."""
    from tessera_stac.catalog.model import GridCell, PixelCounts
    from tessera_stac.publisher.samples.items import fake_item

    per_year = max(1, count // len(years))
    side = int(per_year**0.5) + 1
    items: list[dict[str, Any]] = []
    for year in years:
        for n in range(per_year):
            lon = 71.0 + (n % side) * 0.1 + 0.05
            lat = 22.0 + (n // side) * 0.1 + 0.05
            epsg = GridCell.containing(lon, lat).utm_epsg
            grid = (epsg, (10.0, 0.0, 500000.0, 0.0, -10.0, 2600000.0), (1110, 1110))
            items.append(
                fake_item(
                    lon,
                    lat,
                    year,
                    collection_id=COLLECTION,
                    model_name="tessera",
                    grid=grid,
                    counts=PixelCounts(valid=1, invalid=0),
                )
            )
            if len(items) >= count:
                return items
    return items


def write_ndjson(path: Path, objs: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line."""
    with open(path, "w") as fh:
        for obj in objs:
            fh.write(json.dumps(obj) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def uvicorn_server(factory: str, env: dict[str, str], ping: str = "/_mgmt/ping") -> Iterator[str]:
    """Serve ``factory`` (``module:function``) with uvicorn in a subprocess; yield its URL
    (ready once ``ping`` answers 200)."""
    import httpx

    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TESSERA_STAC_"))}
    full_env.update(env)
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file: an unread pipe would block the server once 64 KiB are written
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + ping, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise RuntimeError(f"{factory} did not start: {err[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def write_results(name: str, results: dict[str, Any], markdown: str) -> None:
    """Write ``bench/results/{name}.json`` and ``{name}.md``; print the Markdown."""
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines: the header, its separator (one column per header cell), then
    one line per row, each cell written with ``str``."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` percentile (0-100) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def add_profiling(app: Any, profiler_for: Callable[[dict[str, Any]], Any]) -> None:
    """Profile requests of ``app`` (pyinstrument, async mode): an ASGI middleware that asks
    ``profiler_for(scope)`` for the profiler of each request (None: not profiled) and runs the
    request between its ``start`` and ``stop``."""

    class Profiled:
        def __init__(self, inner: Any) -> None:
            self.app = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            profiler = profiler_for(scope) if scope["type"] == "http" else None
            if profiler is None:
                await self.app(scope, receive, send)
                return
            profiler.start()
            try:
                await self.app(scope, receive, send)
            finally:
                profiler.stop()

    app.add_middleware(Profiled)

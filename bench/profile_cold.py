"""Profile of the API's first ``POST /embeddings/positions`` against a freshly started server.

Run with ``python -m bench.profile_cold`` (after ``bench_points`` has published its tiles).
Writes ``bench/results/positions_cold_profile.txt``: pyinstrument's view of the first request
and of the same request repeated, 1,000 random points over the 40 spread tiles
(``TESSERA_STAC_PROFILE_CASE=dense``: over bench_join's 4 tiles).

How: uvicorn serves the app in *this* process's main thread, and a wrapper around the app's
router profiles each positions request there (pyinstrument, async mode); the route's
``in_read_pool`` is replaced by a direct call for the run, so the reads the server does in its
read threads are sampled in the same stack (the items are then read one after the other: the
profile shows where the time goes, the bench how long requests take). The client runs in a
second thread.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._support import add_profiling, collection, free_port, temp_cluster, write_ndjson

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    import httpx
    import uvicorn
    from pyinstrument import Profiler

    from bench.bench_points import (
        CACHE,
        POINTS,
        SPREAD_TILES,
        YEAR,
        items_of,
        publish_cells,
        random_points,
        spread_cells,
    )
    from tessera_stac.api import embeddings
    from tessera_stac.api.app import create_app
    from tessera_stac.api.settings import ApiSettings
    from tessera_stac.catalog.pgstac.load import load

    if os.environ.get("TESSERA_STAC_PROFILE_CASE", "spread") == "dense":
        from bench.bench_join import GRIDS, published_tiles
        from tessera_stac.catalog.model import GridCell

        cells = [GridCell.parse(g) for g in GRIDS]
        items = items_of(published_tiles(), cells)
    else:
        cells = spread_cells(SPREAD_TILES)
        items = items_of(publish_cells(CACHE, cells), cells)
    points = random_points(cells, POINTS, 2)
    body = {
        "points": [{"lon": lon, "lat": lat} for lon, lat in points],
        "year": YEAR,
        "collection": items[0]["collection"],
    }

    async def inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    embeddings.in_read_pool = inline  # type: ignore[assignment]
    out: list[str] = []
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        dsn = cluster.dsn()
        coll = {**collection(), "id": items[0]["collection"]}
        load(dsn, str(write_ndjson(Path(tmp) / "items.ndjson", [coll, *items])))
        os.environ["TESSERA_STAC_API_READER_CACHE_SIZE"] = "200"
        app = create_app(ApiSettings(), dsn)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        times: list[float] = []
        profiles: list[Any] = []

        def profiler_for(scope: Any) -> Any:
            """A new profiler for each positions request (kept in ``profiles``)."""
            if scope["path"] != "/embeddings/positions":
                return None
            profiles.append(Profiler(interval=0.001, async_mode="enabled"))
            return profiles[-1]

        add_profiling(app, profiler_for)

        def client() -> None:
            while not server.started:
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port}/embeddings/positions"
            for _ in range(2):
                start = time.perf_counter()
                response = httpx.post(url, json=body, timeout=600)
                times.append(time.perf_counter() - start)
                response.raise_for_status()
            server.should_exit = True

        thread = threading.Thread(target=client)
        thread.start()
        server.run()
        thread.join()
        out.append(f"first request {times[0]:.3f} s, repeat {times[1]:.3f} s (client side)")
        out.append(f"load average {[round(v, 2) for v in os.getloadavg()]}")
        for name, profiler in zip(("FIRST REQUEST", "REPEAT"), profiles, strict=True):
            out.append(f"===== {name}")
            out.append(profiler.output_text(unicode=False, color=False, show_all=False))
    text = "\n".join(out)
    (RESULTS / "positions_cold_profile.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""What the request budgets cost and what they hold (issue "One request must never take the
service down").

Same set-up as ``bench_tiles`` (four 768 px windows of the real grids around 72°E / 21.8°N,
128-band int8 COGs with overviews, a throwaway pgSTAC with the fitted PCA basis). Three
servers, each a uvicorn subprocess with one worker, over the same database and files:

* ``before``: the API at the last commit without budgets (``BEFORE_REF``, checked out with
  ``git worktree`` and put first on ``PYTHONPATH``);
* ``after``: the API now, its tile cache off (``TILE_CACHE_MB=0``) so every request renders;
* bare rio-tiler in this process (the reference of ``bench_tiles``).

Rounds alternate the order so drift on the shared machine hits all three. Target: ``after``
p50 <= 1.05 x ``before`` on ordinary tiles (an item's RGB tile, the mosaic's PCA tile, a
similarity tile). Then the hostile corpus of ``tests/api/test_api_budgets.py`` against
``after``: worst request time and the worker's peak RSS against ``memory_bound_mb()``.

Results: ``bench/results/budgets.json`` and ``budgets.md``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._support import COLLECTION, md_table, temp_cluster, uvicorn_server, write_results
from bench.bench_tiles import (
    CORNER,
    YEAR,
    bare_mosaic,
    bare_single,
    drive,
    inside,
    load_tiles,
    summarise,
    tiles_around,
)

ROOT = Path(__file__).resolve().parent.parent
BEFORE_REF = "6840e40"
ROUNDS = 6
PER_ROUND = 6
FACTORY = "tessera_stac.api.app:create_app_from_env"
LAYERS = ("catalog", "publisher", "api", "schemas", "cli")


@contextlib.contextmanager
def before_tree(tmp: Path) -> Iterator[Path]:
    """A ``PYTHONPATH`` root whose ``tessera_stac`` is the code at ``BEFORE_REF``."""
    tree = tmp / "before-src"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), BEFORE_REF],
        check=True,
        capture_output=True,
    )
    try:
        pkg = tmp / "before-path" / "tessera_stac"
        pkg.mkdir(parents=True)
        for layer in LAYERS:
            if (tree / layer).is_dir():
                (pkg / layer).symlink_to(tree / layer)
        yield pkg.parent
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )


def peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/statm") as fh:
                out.append(int(fh.read().split()[1]) * 4096)
        except OSError:
            pass
        time.sleep(0.02)


def server_pid(url: str) -> int:
    """The pid listening on ``url``'s port (the uvicorn subprocess)."""
    port = url.rsplit(":", 1)[1]
    found = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return int(found.stdout.split("pid=")[1].split(",")[0])


def main() -> None:
    import httpx

    from tessera_stac.api.settings import ApiSettings
    from tessera_stac.api.tiles import EmbeddingProjection, EmbeddingSimilarity, tile_urls
    from tests.api.test_api_budgets import hostile_corpus

    load_before = [round(v, 2) for v in os.getloadavg()]
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        root = Path(tmpdir)
        dsn = cluster.dsn()
        items, projection = load_tiles(root, dsn)
        env = {"TESSERA_STAC_DATABASE_URL": dsn}
        query = (72.0321, 21.8123)
        with (
            before_tree(root) as before_path,
            uvicorn_server(FACTORY, {**env, "PYTHONPATH": str(before_path)}) as before,
            uvicorn_server(FACTORY, {**env, "TESSERA_STAC_API_TILE_CACHE_MB": "0"}) as after,
        ):
            client = httpx.Client(timeout=300)
            # which code each server runs: only the budgets refuse a tile at zoom -1 with 400
            probe = "/tiles/collections/none/items/none/tiles/WebMercatorQuad/-1/0/0.png"
            assert client.get(before + probe).status_code != 400, "before runs the new code"
            assert client.get(after + probe).status_code == 400
            vector = client.get(
                f"{after}/embeddings/position",
                params={"lon": query[0], "lat": query[1], "year": YEAR},
            ).json()["embedding"]
            single = items[1]
            scenarios = {
                "item rgb": (
                    lambda base: tile_urls(base, COLLECTION, "rgb", item_id=single["id"]),
                    inside(single["assets"]["embeddings"]["href"], 72.02, 21.78),
                    bare_single(single["assets"]["embeddings"]["href"]),
                ),
                "mosaic pca": (
                    lambda base: tile_urls(base, COLLECTION, "pca", year=YEAR),
                    tiles_around(*CORNER, PER_ROUND),
                    bare_mosaic(items, EmbeddingProjection(projection=projection)),
                ),
                "similarity": (
                    lambda base: tile_urls(
                        base, COLLECTION, "similarity", year=YEAR, lon=query[0], lat=query[1]
                    ),
                    tiles_around(*CORNER, PER_ROUND),
                    bare_mosaic(items, EmbeddingSimilarity(vector=vector), similarity=True),
                ),
            }
            results: dict[str, Any] = {}
            for name, (urls_of, tiles, bare) in scenarios.items():
                fetchers = {"bare": bare}
                for who, base in (("before", before), ("after", after)):
                    template = urls_of(base)["xyz"]

                    def api(tile: Any, template: str = template) -> bytes:
                        got = client.get(
                            template.replace("{z}", str(tile.z))
                            .replace("{x}", str(tile.x))
                            .replace("{y}", str(tile.y))
                        )
                        got.raise_for_status()
                        return got.content

                    fetchers[who] = api
                for fetch in fetchers.values():
                    fetch(tiles[0])  # warm
                timings: dict[str, list[float]] = {who: [] for who in fetchers}
                order = list(fetchers)
                for round_ in range(ROUNDS):
                    for who in order[round_ % 3 :] + order[: round_ % 3]:
                        timings[who] += drive(fetchers[who], tiles)
                stats: dict[str, Any] = {who: summarise(t) for who, t in timings.items()}
                stats["after_vs_before_p50"] = round(
                    stats["after"]["p50_ms"] / stats["before"]["p50_ms"], 3
                )
                stats["after_vs_bare_p50"] = round(
                    stats["after"]["p50_ms"] / stats["bare"]["p50_ms"], 2
                )
                results[name] = stats
                print(name, stats, flush=True)
            # the hostile corpus against ``after``
            pid = server_pid(after)
            stop, samples = threading.Event(), []  # type: ignore[var-annotated]
            watcher = threading.Thread(target=peak_rss, args=(pid, stop, samples), daemon=True)
            watcher.start()
            worst = (0.0, "")
            statuses: dict[int, int] = {}
            for method, path, kwargs, _allowed in hostile_corpus(single):
                start = time.perf_counter()
                got = client.request(method, after + path, **kwargs)
                took = time.perf_counter() - start
                statuses[got.status_code] = statuses.get(got.status_code, 0) + 1
                if took > worst[0]:
                    worst = (took, f"{method} {path.rsplit('/', 3)[-3:]} {str(kwargs)[:80]}")
            stop.set()
            watcher.join()
            alive = server_pid(after) == pid
            client.close()
    report = {
        "before_ref": BEFORE_REF,
        "rounds": ROUNDS,
        "tiles_per_round": PER_ROUND,
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "tiles": results,
        "corpus": {
            "requests": sum(statuses.values()),
            "statuses": statuses,
            "worst_s": round(worst[0], 2),
            "worst_request": worst[1],
            "peak_rss_mb": round(max(samples, default=0) / 2**20),
            "memory_bound_mb": ApiSettings().memory_bound_mb(),
            "same_pid_after": alive,
        },
        "target": "after p50 <= 1.05 x before on ordinary tiles; corpus < 500, pid alive, "
        "peak RSS under the bound",
    }
    write_results("budgets", report, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Request budgets: cost on ordinary tiles, and the hostile corpus",
        "",
        f"Load average {report['load_average_before']} before, "
        f"{report['load_average_after']} after ({report['cpus']} cores, shared machine). "
        f"`before` = the API at {report['before_ref']} (no budgets); `after` = now, tile cache "
        f"off; bare = rio-tiler in-process. {report['rounds']} rounds x "
        f"{report['tiles_per_round']} z14 tiles, order rotated each round.",
        "",
        *md_table(
            ("tiles", "bare p50 ms", "before p50 ms", "after p50 ms", "after / before",
             "after / bare"),
            [
                (name, s["bare"]["p50_ms"], s["before"]["p50_ms"], s["after"]["p50_ms"],
                 s["after_vs_before_p50"], s["after_vs_bare_p50"])
                for name, s in report["tiles"].items()
            ],
        ),
    ]  # fmt: skip
    c = report["corpus"]
    lines += [
        "",
        f"Hostile corpus ({c['requests']} requests, statuses {c['statuses']}): worst "
        f"{c['worst_s']} s ({c['worst_request']}); worker peak RSS {c['peak_rss_mb']} MB "
        f"(declared bound {c['memory_bound_mb']} MB); same pid after: {c['same_pid_after']}.",
        "",
        f"Target: {report['target']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())  # type: ignore[func-returns-value]

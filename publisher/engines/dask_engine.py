"""Dask distributed as the engine of per-tile work (``publish``, ``watersheds join``).

The engine maps a top-level (picklable) per-tile function over tasks and yields the results as
they complete, like the local process pool does. Where the cluster is:

* ``scheduler="tcp://host:port"`` (or ``DASK_SCHEDULER_ADDRESS``): an existing cluster;
* otherwise a :class:`distributed.LocalCluster` of worker processes (one thread each, so GDAL and
  numpy never fight over a worker's GIL) started for the run and closed after it.

What makes a run safe on a cluster where workers come and go:

* every task has a deterministic key (function name + a hash of its arguments), so a task
  submitted twice is computed once, and a task whose worker died is simply run again elsewhere
  (a task that kills every worker it runs on fails for good with ``KilledWorker`` once the
  scheduler's ``distributed.scheduler.allowed-failures`` (default 3) is spent; the tasks that
  shared its worker are rescheduled. Unlike the process engine, which re-runs each suspect
  alone, the scheduler counts a worker's death against every task it was processing, so a
  task that kept landing beside the crashing one can be given up too - rare with the default
  allowance and one thread per worker, and reported through ``on_error`` like any failure,
  never as a wrong result)
  (the per-tile function writes each object whole with one PUT of verified bytes, so a re-run
  writes the same bytes and never leaves a partial object);
* the client holds no per-task state but the futures it is waiting for: a result exists only
  once the task finished and the scheduler handed it over, so a lost worker cannot leave the
  client with half a result; results are released as soon as they are yielded;
* at most ``window`` tasks are in the scheduler at once, so millions of tiles stream through a
  bounded amount of client and scheduler memory.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from tessera_stac.catalog.errors import ConfigurationError
from tessera_stac.publisher.engines.local import OnError, TaskFn

T = TypeVar("T")
R = TypeVar("R")

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def scheduler_address(explicit: str | None = None) -> str | None:
    """The scheduler to connect to: ``explicit``, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    address = explicit or os.environ.get(SCHEDULER_ENV) or None
    if address and "://" not in address:
        raise ConfigurationError(
            f"Dask scheduler address must look like tcp://host:port, got {address!r}"
        )
    return address


def task_key(fn: Callable[..., Any], task: Any) -> str:
    """Deterministic key of ``fn(task)``: the same task always gets the same key."""
    from dask.base import tokenize

    return f"{getattr(fn, '__name__', 'task')}-{tokenize(task)}"


class DaskEngine:
    """Run a per-tile function over tasks on Dask distributed.

    Args:
        scheduler: ``tcp://host:port`` of a running scheduler (default: env, then a local cluster).
        n_workers: worker processes of the local cluster (default: CPU count).
        threads_per_worker: threads in each local worker process.
        retries: times a task that raised is retried (a task on a lost worker is rescheduled
            by the scheduler without counting as a retry).
        window: most tasks submitted and not yet yielded at once (default: 4 per thread,
            at least 64).
        client: an existing ``distributed.Client`` to use (not closed by the engine).
        connect_timeout: seconds to wait for a remote scheduler.
    """

    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        retries: int = 2,
        window: int | None = None,
        client: Any = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.address = scheduler_address(scheduler)
        self.n_workers = n_workers or os.cpu_count() or 1
        self.threads_per_worker = threads_per_worker
        self.retries = retries
        self.window = window
        self._client = client
        self._own_client = client is None
        self._cluster: Any = None
        self.connect_timeout = connect_timeout

    # --------------------------------------------------------------------- lifecycle
    def __enter__(self) -> DaskEngine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (started on first use)."""
        if self._client is None:
            self.start()
        return self._client

    def start(self) -> None:
        """Connect to the scheduler, or start a local cluster."""
        if self._client is not None:
            return
        from distributed import Client, LocalCluster

        if self.address:
            try:
                self._client = Client(self.address, timeout=f"{self.connect_timeout}s")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot reach the Dask scheduler at {self.address}: {exc}"
                ) from exc
        else:
            self._cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                dashboard_address=":0",
            )
            self._client = Client(self._cluster)

    def close(self) -> None:
        """Close what the engine started (never a client it was given)."""
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def describe(self) -> dict[str, Any]:
        """Where the work runs: scheduler address, workers and threads (for the run report)."""
        info = self.client.scheduler_info(n_workers=-1)
        workers = info.get("workers", {})
        return {
            "engine": self.name,
            "scheduler": self.client.scheduler.address,
            "workers": len(workers),
            "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        }

    # ------------------------------------------------------------------------- work
    def _window(self) -> int:
        if self.window:
            return self.window
        threads = sum(self.client.nthreads().values()) or 1
        return max(64, 4 * threads)

    def map(
        self, fn: TaskFn[T, R], tasks: Iterable[T], on_error: OnError[T, R] = None
    ) -> Iterator[R]:
        """Yield ``fn(task)`` for every task, in completion order.

        Args:
            fn: a top-level function (workers import it by name).
            tasks: the tasks (picklable); consumed lazily.
            on_error: turns a task that failed for good (raised after its retries, or killed
                workers repeatedly: ``KilledWorker``) into a result; without it the error is
                raised. Tasks merely running beside a crash are rescheduled, never reported.
        """
        from distributed import as_completed

        client = self.client
        pending = iter(tasks)
        by_key: dict[str, list[T]] = {}  # a task listed twice has one key and two futures
        window = self._window()
        done = object()

        def submit(task: T) -> Any:
            key = task_key(fn, task)
            by_key.setdefault(key, []).append(task)
            return client.submit(fn, task, key=key, pure=False, retries=self.retries)

        first = [submit(t) for t in itertools.islice(pending, window)]
        if not first:
            return
        queue = as_completed(first)
        for future in queue:
            same = by_key[future.key]
            task = same.pop()
            if not same:
                del by_key[future.key]
            if future.status == "finished":
                result = future.result()
            else:
                exc = future.exception()
                if exc is None:  # cancelled or lost without an error of its own
                    exc = RuntimeError(f"task {future.key} ended {future.status} without a result")
                future.release()
                if on_error is None:
                    raise exc
                result = on_error(task, exc)
            future.release()
            nxt = next(pending, done)
            if nxt is not done:
                queue.add(submit(nxt))  # type: ignore[arg-type]
            yield result


def probe_task(task: tuple[int, float, bool]) -> tuple[int, int]:
    """A no-op task to check a cluster and measure the scheduler's overhead per task.

    Args:
        task: ``(number, seconds to sleep, fail)``.

    Returns:
        ``(number, pid of the worker process that ran it)``.

    Raises:
        RuntimeError: when ``fail`` is set (to exercise error handling).
    """
    import time

    number, seconds, fail = task
    if seconds:
        time.sleep(seconds)
    if fail:
        raise RuntimeError(f"probe task {number} failed on purpose")
    return number, os.getpid()


# ------------------------------------------------------------------ watersheds join as tasks
@dataclass(frozen=True)
class JoinTileTask:
    """One tile of a watersheds join: the tile and the MWS polygons that touch its cell.

    Attributes:
        tile: the embedding tile to read.
        index: positions (in the whole layer) of the polygons sent.
        wkb: those polygons, as WKB.
        groups: the layer's overlap groups, as positions into ``index``.
        env: GDAL configuration for reading the COGs (e.g. the S3 endpoint).
    """

    tile: Any  # tessera_stac.publisher.join.join.EmbeddingTile
    index: tuple[int, ...]
    wkb: tuple[bytes, ...]
    groups: tuple[tuple[int, ...], ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JoinPartial:
    """What one tile adds to the per-MWS sums (rows of the polygons it touched)."""

    item_id: str
    index: tuple[int, ...]
    sums: Any  # (len(index), 128) float64
    count: Any  # (len(index),) int64
    pixels: Any  # (len(index),) int64
    read: bool


def join_tile_task(task: JoinTileTask) -> JoinPartial:
    """Accumulate one tile's owned, valid pixels per polygon (runs on a worker)."""
    import numpy as np
    import shapely

    from tessera_stac.publisher.join.join import Accumulator, accumulate_tile

    geoms = np.asarray(shapely.from_wkb(list(task.wkb)), dtype=object)
    groups = [np.asarray(g, dtype=np.int64) for g in task.groups]
    acc = Accumulator(len(geoms))
    read = bool(len(geoms)) and accumulate_tile(
        task.tile, geoms, groups, acc, shapely.STRtree(geoms), dict(task.env) or None
    )
    return JoinPartial(task.tile.item_id, task.index, acc.sums, acc.count, acc.pixels, read)


def join_on_engine(
    engine: Any,
    frame: Any,
    tiles: Sequence[Any],
    year: int,
    on_tile: Callable[[Any], None] | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """``join.join_embeddings`` with one task per tile on ``engine`` (Dask, process pool...).

    Each task returns its tile's partial sums; the client adds them in tile order, so the
    result does not depend on which worker finished first, and a task rerun after a lost
    worker contributes exactly once (only finished tasks are ever added).

    Raises:
        InputError: no tile of ``year`` covers any MWS.
    """
    import numpy as np
    import shapely

    from tessera_stac.catalog.errors import InputError
    from tessera_stac.publisher.join import join as joinmod

    geoms = np.asarray(frame.geometry.values, dtype=object)
    needed = {c.name for c in joinmod.cells_covering(frame.total_bounds)}
    by_cell = {t.cell.name: t for t in tiles if t.year == year and t.cell.name in needed}
    if not by_cell:
        raise InputError(
            f"no embedding tile of {year} under the MWS layer (it needs cells like "
            f"{sorted(needed)[0]})"
        )
    group_of = np.zeros(len(geoms), dtype=np.int64)
    for g, members in enumerate(joinmod.overlap_groups(list(geoms))):
        group_of[members] = g
    tree = shapely.STRtree(geoms)
    env_items = tuple(sorted((env or {}).items()))

    def task_for(tile: Any) -> JoinTileTask:
        index = np.sort(tree.query(shapely.box(*tile.cell.bounds), predicate="intersects"))
        local_groups = [np.flatnonzero(group_of[index] == g) for g in np.unique(group_of[index])]
        return JoinTileTask(
            tile=tile,
            index=tuple(int(i) for i in index),
            wkb=tuple(shapely.to_wkb(geoms[index])),
            groups=tuple(tuple(int(i) for i in g) for g in local_groups),
            env=env_items,
        )

    partials: dict[str, JoinPartial] = {}
    for partial in engine.map(join_tile_task, (task_for(by_cell[n]) for n in sorted(by_cell))):
        partials[partial.item_id] = partial
        if on_tile:
            on_tile(partial)
    acc = joinmod.Accumulator(len(geoms))
    read = []
    for name in sorted(by_cell):  # fixed order: the sums never depend on completion order
        tile = by_cell[name]
        part = partials[tile.item_id]
        rows = np.asarray(part.index, dtype=np.int64)
        if rows.size:
            acc.sums[rows] += part.sums
            acc.count[rows] += part.count
            acc.pixels[rows] += part.pixels
        if part.read:
            read.append(tile)
    missing = joinmod._missing_cells(geoms, set(by_cell))
    table = joinmod._summary_table(frame, acc, missing)
    cells_missing = tuple(sorted({c for m in missing for c in m}))
    return joinmod.JoinResult(year, table, tuple(read), cells_missing)

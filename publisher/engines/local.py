"""How tile tasks are executed: a tiny interface with serial and process-pool engines.

An :class:`Engine` maps a top-level (picklable) function over tasks and yields each result as
soon as it completes (completion order). The function is expected to handle its own errors
(``publish_tile`` returns a failed outcome rather than raising); an exception that escapes it
anyway - or a worker process that dies (killed, out of memory) while running it - is passed to
``on_error``, which turns it into a result so the caller can report that task and carry on
(without ``on_error`` the exception is raised). Tasks that merely shared a pool or a worker with
a task that crashed are run again, not reported: both the process engine and Dask report only
the task that crashed.

Engines: :class:`SerialEngine` (this process), :class:`ProcessEngine` (a local process pool,
default one worker per core) and ``engine_dask.DaskEngine`` (Dask distributed, same
``map`` contract). Adding another means implementing ``map``; nothing else changes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol, TypeVar

from tessera_stac.publisher.lifeline import die_with

T = TypeVar("T")
R = TypeVar("R")
#: the work of one task, and what turns a task that failed into a result (None: raise)
TaskFn = Callable[[T], R]
OnError = Callable[[T, BaseException], R] | None


class Engine(Protocol):
    """Runs ``fn`` over tasks and yields results in completion order."""

    def map(
        self, fn: TaskFn[T, R], tasks: Iterable[T], on_error: OnError[T, R] = None
    ) -> Iterator[R]:
        """Yield ``fn(task)`` for every task as it completes; errors go to ``on_error``."""
        ...


class SerialEngine:
    """Runs tasks one after the other in this process (debugging, tiny runs)."""

    name = "serial"
    workers = 1

    def map(
        self, fn: TaskFn[T, R], tasks: Iterable[T], on_error: OnError[T, R] = None
    ) -> Iterator[R]:
        """See :class:`Engine`."""
        for task in tasks:
            try:
                result = fn(task)
            except Exception as exc:
                if on_error is None:
                    raise
                result = on_error(task, exc)
            yield result


class ProcessEngine:
    """Runs tasks in a pool of worker processes (default: one per core).

    At most ``2 * workers`` tasks are in flight, so long task lists stream through the pool.
    Workers start with ``forkserver`` (``spawn`` where unavailable). If a worker dies, a fresh
    pool re-runs the tasks the broken one took down, each alone, and only the task that crashes
    (again, or alone) is reported through ``on_error`` (see :meth:`map`). Workers
    die with this process, even when it is killed with SIGKILL (``lifeline.die_with``).
    """

    name = "process"

    def __init__(self, workers: int | None = None, max_tasks_per_child: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_tasks_per_child = max_tasks_per_child

    def _pool(self) -> ProcessPoolExecutor:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        return ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            max_tasks_per_child=self.max_tasks_per_child,
            initializer=die_with,
            initargs=(os.getpid(),),
        )

    def map(
        self, fn: TaskFn[T, R], tasks: Iterable[T], on_error: OnError[T, R] = None
    ) -> Iterator[R]:
        """See :class:`Engine`.

        A worker that dies breaks the whole pool: every task in flight fails with
        ``BrokenProcessPool``, and which of them crashed is unknown. Those tasks become
        suspects: once the pool is renewed, each suspect runs again *alone* (nothing else in
        flight), so a pool that breaks then was broken by that task, which is reported through
        ``on_error``; the innocent ones simply complete. A task that broke a pool while it was
        the only one in flight is reported at once. No task runs more than twice, and the
        outcome does not depend on which tasks the broken pool happened to hold.
        """
        iterator = iter(tasks)
        end = object()
        pending: dict[Future[R], T] = {}
        suspects: deque[T] = deque()  # taken down by a broken pool: re-run one at a time
        unsent: deque[T] = deque()  # refused by a pool already broken: never ran, go first
        pool = self._pool()
        used = False  # has the current pool accepted a task?

        def submit(task: T) -> bool:
            """Put ``task`` in flight; False when the pool is already broken (a worker died
            since the last submit): the task did not start and waits for the next pool."""
            nonlocal used
            try:
                pending[pool.submit(fn, task)] = task
            except BrokenProcessPool:
                return False
            used = True
            return True

        def settle(
            done: list[tuple[Future[R], T]], alone: bool, casualties: list[T]
        ) -> Iterator[R]:
            """Results of finished futures; a task the broken pool took down with others
            becomes a casualty (run again), one that crashed alone or raised goes to
            ``on_error``."""
            for future, task in done:
                error = future.exception()
                if error is None:
                    yield future.result()
                elif isinstance(error, BrokenProcessPool) and not alone:
                    casualties.append(task)
                elif on_error is None:
                    raise error
                else:  # raised in the task, or crashed with nothing else in flight
                    yield on_error(task, error)

        try:
            while True:
                refused = False
                if suspects:
                    if not pending:
                        if submit(suspects[0]):
                            suspects.popleft()
                        else:
                            refused = True
                else:
                    while len(pending) < 2 * self.workers:
                        nxt = unsent.popleft() if unsent else next(iterator, end)
                        if nxt is end:
                            break
                        task: T = nxt  # type: ignore[assignment]
                        if not submit(task):
                            unsent.appendleft(task)
                            refused = True
                            break
                if not pending and not refused:
                    return
                if refused and not used:
                    # a fresh pool refused its first task: it cannot run anything
                    raise BrokenProcessPool("a new process pool was broken before any task ran")
                alone = len(pending) == 1
                finished = set() if refused else wait(pending, return_when=FIRST_COMPLETED)[0]
                done = [(future, pending.pop(future)) for future in finished]
                broken = refused or any(
                    isinstance(future.exception(), BrokenProcessPool) for future, _ in done
                )
                casualties: list[T] = []
                yield from settle(done, alone, casualties)
                if broken:
                    # the pool is broken: every future still pending fails with it (those
                    # that finished before the break keep their results); a task that was
                    # alone in flight when the pool broke is the one that broke it
                    yield from settle(list(pending.items()), alone, casualties)
                    pending.clear()
                    suspects.extend(casualties)
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._pool()
                    used = False
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def make_engine(workers: int | None) -> SerialEngine | ProcessEngine:
    """``workers == 1`` -> :class:`SerialEngine`; otherwise a :class:`ProcessEngine`."""
    return SerialEngine() if workers == 1 else ProcessEngine(workers)


@contextlib.contextmanager
def open_engine(kind: str, workers: int | None, scheduler: str | None) -> Iterator[Engine]:
    """The engine named on the command line (``serial``, ``process`` or ``dask``).

    A scheduler address implies Dask; ``process`` with one worker runs serially.

    Raises:
        ConfigurationError: an unknown engine name or a malformed scheduler address.
    """
    from tessera_stac.catalog.errors import ConfigurationError

    if scheduler:
        kind = "dask"
    if kind == "serial" or (kind == "process" and workers == 1):
        yield SerialEngine()
    elif kind == "process":
        yield ProcessEngine(workers)
    elif kind == "dask":
        from tessera_stac.publisher.engines.dask_engine import DaskEngine, scheduler_address

        with DaskEngine(scheduler=scheduler_address(scheduler), n_workers=workers) as engine:
            yield engine
    else:
        raise ConfigurationError(f"--engine must be serial, process or dask, got {kind!r}")


def probe(task: tuple[int, str]) -> int:
    """A task for checking engines: ``(number, action)`` with action ``ok``, ``raise``, ``die``
    (the worker process exits at once, as if killed) or ``sleep`` (a minute). Returns
    ``number``."""
    number, action = task
    if action == "sleep":
        import time

        time.sleep(60)
    if action == "raise":
        raise RuntimeError(f"probe {number} failed on purpose")
    if action == "die":
        os._exit(13)
    return number

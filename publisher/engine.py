"""How tile tasks are executed: a tiny interface with serial and process-pool engines.

An :class:`Engine` maps a top-level (picklable) function over tasks and yields each
:class:`Done` as soon as it completes, in completion order. The function is expected to
handle its own errors (``publish_tile`` returns a failed outcome rather than raising); an
exception that escapes it anyway - or a worker that dies (killed, out of memory) - arrives
as ``Done.error`` so the caller can report that task and carry on.

To add an engine (e.g. Dask distributed in its own module), implement ``map_unordered`` with
the same contract; nothing else in the publisher needs to change.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Done(Generic[T, R]):
    """One finished task: its result, or the error that escaped it."""

    task: T
    result: R | None = None
    error: BaseException | None = None


class Engine(Protocol):
    """Runs ``fn`` over tasks; yields :class:`Done` in completion order."""

    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[Done[T, R]]:
        """Apply ``fn`` to every task; yield each as it completes."""
        ...


class SerialEngine:
    """Runs tasks one after the other in this process (debugging, tiny runs)."""

    workers = 1

    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[Done[T, R]]:
        for task in tasks:
            try:
                yield Done(task, fn(task))
            except Exception as exc:
                yield Done(task, error=exc)


class ProcessEngine:
    """Runs tasks in a pool of worker processes (default: one per core).

    At most ``2 * workers`` tasks are in flight, so long task lists are not materialised in
    the pool's queue. Workers are started with ``forkserver`` (``spawn`` where unavailable).
    """

    def __init__(self, workers: int | None = None, max_tasks_per_child: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_tasks_per_child = max_tasks_per_child

    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[Done[T, R]]:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        pending: dict[Future[R], T] = {}
        iterator = iter(tasks)
        with ProcessPoolExecutor(
            self.workers, mp_context=context, max_tasks_per_child=self.max_tasks_per_child
        ) as pool:
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2 * self.workers:
                    try:
                        task = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[pool.submit(fn, task)] = task
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        yield Done(task, future.result())
                    else:
                        yield Done(task, error=error)


def make_engine(workers: int | None) -> SerialEngine | ProcessEngine:
    """``workers == 1`` -> :class:`SerialEngine`; otherwise a :class:`ProcessEngine`."""
    return SerialEngine() if workers == 1 else ProcessEngine(workers)

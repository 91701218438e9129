"""Engines: every task reported once; errors and dead workers go to on_error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import pytest

from tessera_stac.publisher.engines.local import ProcessEngine, SerialEngine, probe


def _on_error(task: tuple[int, str], exc: BaseException) -> int:
    return -task[0]


def test_serial_engine() -> None:
    tasks = [(i, "raise" if i == 2 else "ok") for i in range(5)]
    assert list(SerialEngine().map(probe, tasks, on_error=_on_error)) == [0, 1, -2, 3, 4]
    with pytest.raises(RuntimeError, match="on purpose"):
        list(SerialEngine().map(probe, [(1, "raise")]))


def test_process_engine_survives_a_dead_worker() -> None:
    tasks = [(i, {3: "die", 5: "raise"}.get(i, "ok")) for i in range(1, 13)]
    results = list(ProcessEngine(2).map(probe, tasks, on_error=_on_error))
    # every task reported exactly once; whichever healthy tasks the broken pool took down were
    # run again in a fresh pool, so only the task that crashed and the one that raised failed
    assert Counter(abs(r) for r in results) == Counter(range(1, 13))
    assert sorted(r for r in results if r < 0) == [-5, -3]
    assert {r for r in results if r > 0} == set(range(1, 13)) - {3, 5}


def test_process_engine_resubmits_tasks_a_broken_pool_refused() -> None:
    # the crasher goes first and the task list pauses before the next task, so (once the
    # worker has died) the pool is already broken when the next task is submitted: submit
    # itself raises. That task never ran; it must run in the next pool, not be lost or failed.
    def tasks() -> Iterator[tuple[int, str]]:
        yield (1, "die")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not broken_seen():
            time.sleep(0.05)
        yield from ((i, "ok") for i in range(2, 8))

    pools: list[object] = []
    engine = ProcessEngine(2)
    make_pool = engine._pool

    def counting_pool() -> object:
        pools.append(make_pool())
        return pools[-1]

    def broken_seen() -> bool:
        return bool(pools) and bool(getattr(pools[-1], "_broken", False))

    engine._pool = counting_pool  # type: ignore[method-assign]
    results = list(engine.map(probe, tasks(), on_error=_on_error))
    assert Counter(abs(r) for r in results) == Counter(range(1, 8))
    assert [r for r in results if r < 0] == [-1]
    assert len(pools) >= 2  # the broken pool was replaced


def test_process_engine_reports_each_crashing_task_and_no_other() -> None:
    # two crashers, one at the very start (it breaks a full pool) and one last (alone in flight
    # once the list runs out, or among suspects): both reported, every healthy task ok
    tasks = [(i, "die" if i in (1, 9) else "ok") for i in range(1, 10)]
    results = list(ProcessEngine(3).map(probe, tasks, on_error=_on_error))
    assert Counter(abs(r) for r in results) == Counter(range(1, 10))
    assert sorted(r for r in results if r < 0) == [-9, -1]
    # without on_error, the crash is raised (after the healthy tasks' results)
    with pytest.raises(BrokenProcessPool):
        list(ProcessEngine(2).map(probe, [(1, "ok"), (2, "die"), (3, "ok")]))


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in found]
        found.update(kids)
        todo += kids
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_parent_killed_by_sigkill() -> None:
    from tessera_stac.publisher.lifeline import alive

    script = (
        "from tessera_stac.publisher.engines.local import ProcessEngine, probe\n"
        "print('go', flush=True)\n"
        "list(ProcessEngine(2).map(probe, [(i, 'sleep') for i in range(4)]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"go"
    deadline = time.monotonic() + 60
    family: set[int] = set()
    while len(family) < 3:  # forkserver (or resource tracker) + 2 workers
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.3)
        family = _children(proc.pid)
    time.sleep(1)  # workers initialised and sleeping in their task
    family = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in family if alive(p)]
    for pid in left:  # do not leak them into the rest of the run
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind 5 s after kill -9 of their parent: {left}"

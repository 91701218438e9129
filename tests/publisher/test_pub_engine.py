"""Engines: every task reported once; errors and dead workers go to on_error."""

from __future__ import annotations

from collections import Counter

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
    assert len(results) == len(tasks)
    assert -3 in results and -5 in results  # the crash and the error are reported
    ok = {r for r in results if r > 0}
    # tasks the dead worker's pool took down are reported as failed, never lost or doubled
    assert Counter(abs(r) for r in results) == Counter(range(1, 13))
    assert ok >= {i for i in range(9, 13)}  # a fresh pool ran the rest

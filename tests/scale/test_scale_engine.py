"""The Dask engine: every task once, in spite of a worker killed mid-run; errors reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tessera_stac.catalog.errors import ConfigurationError
from tessera_stac.publisher.engines.dask_engine import DaskEngine, probe_task, scheduler_address


@pytest.fixture(scope="module")
def engine() -> Iterator[DaskEngine]:
    with DaskEngine(n_workers=2, threads_per_worker=1) as eng:
        yield eng


def test_every_task_once_when_a_worker_dies(engine: DaskEngine) -> None:
    pids = engine.client.run(os.getpid)
    assert len(pids) == 2
    victim = sorted(pids.values())[0]
    seen: list[int] = []
    ran_on: set[int] = set()
    for number, pid in engine.map(probe_task, [(i, 0.3, False) for i in range(16)]):
        seen.append(number)
        ran_on.add(pid)
        if len(seen) == 2:
            os.kill(victim, signal.SIGKILL)
    assert Counter(seen) == Counter(range(16))
    assert victim not in ran_on or len(ran_on) >= 2
    # the nanny replaces the dead worker: a process that did not exist before joins (waited for,
    # bounded, because on a loaded machine the restart can outlast the 16 short tasks)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = set(engine.client.run(os.getpid).values())
        if len(now) == 2 and now - set(pids.values()):
            break
        time.sleep(0.5)
    assert len(now) == 2 and victim not in now and now - set(pids.values())
    assert engine.describe()["workers"] == 2


def test_failures_go_to_on_error_and_the_rest_completes(engine: DaskEngine) -> None:
    tasks = [(i, 0.0, i % 5 == 0) for i in range(12)]
    results = list(
        engine.map(probe_task, tasks, on_error=lambda task, exc: (-task[0], str(exc)))  # type: ignore[arg-type,return-value]
    )
    failed = sorted(-n for n, _ in results if n <= 0 and isinstance(_, str))
    assert failed == [0, 5, 10]
    assert sorted(n for n, p in results if isinstance(p, int)) == [i for i in range(12) if i % 5]
    with pytest.raises(RuntimeError, match="on purpose"):
        list(engine.map(probe_task, [(1, 0.0, True)]))


def test_scheduler_address_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    assert scheduler_address(None) == "tcp://10.0.0.1:8786"
    assert scheduler_address("tcp://h:1") == "tcp://h:1"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "nonsense")
    with pytest.raises(ConfigurationError, match="tcp://host:port"):
        scheduler_address(None)


def test_unreachable_scheduler_is_a_clear_error() -> None:
    from tessera_stac.catalog.pgstac.cluster import free_port

    eng = DaskEngine(scheduler=f"tcp://127.0.0.1:{free_port()}", connect_timeout=2)
    with pytest.raises(ConfigurationError, match="cannot reach"):
        eng.start()


def test_engine_on_an_existing_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        with DaskEngine() as eng:  # no address given: the environment's
            info = eng.describe()
            assert info["scheduler"] == cluster.scheduler_address
            assert info["workers"] == 1
            assert sorted(
                n for n, _ in eng.map(probe_task, [(i, 0.0, False) for i in range(5)])
            ) == [0, 1, 2, 3, 4]
        # the engine closed its client, not the cluster it was pointed at
        assert cluster.status.name == "running"


@pytest.mark.slow  # workers killed and restarted by their nannies
def test_a_task_that_kills_its_worker_is_reported_and_the_others_complete() -> None:
    """Close to the process engine's outcome (tests/publisher/test_pub_engine.py): the task
    that kills every worker it runs on fails for good (``KilledWorker``), every task is reported
    once, and healthy tasks answer their own value. The scheduler counts a death against every
    task the worker was processing, so a healthy task that landed beside the crasher twice may
    be given up too (dask_engine's docstring): only as a failure, never as a wrong value."""
    import dask
    from distributed import KilledWorker

    from tessera_stac.publisher.engines.local import probe

    tasks = [(i, "die" if i == 4 else "ok") for i in range(1, 9)]
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        DaskEngine(n_workers=2, threads_per_worker=1) as eng,
    ):
        results = list(
            eng.map(probe, tasks, on_error=lambda task, exc: (-task[0], exc))  # type: ignore[arg-type,return-value]
        )
    numbers = [r[0] if isinstance(r, tuple) else r for r in results]
    # each task once, a healthy one with its own value (probe returns its number)
    assert Counter(abs(n) for n in numbers) == Counter(range(1, 9))
    failed = {-r[0]: r[1] for r in results if isinstance(r, tuple)}
    assert isinstance(failed.get(4), KilledWorker)  # the crasher
    assert all(isinstance(e, (KilledWorker, RuntimeError)) for e in failed.values()), failed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dask_workers_die_with_a_parent_killed_by_sigkill() -> None:
    """``kill -9`` of a run on the Dask engine's local cluster leaves no worker behind (as
    with the process engine). distributed's worker processes already watch their nanny's
    process (they were gone 0.05-0.1 s after the kill when measured), so the engine adds
    nothing; this pins the behaviour down."""
    from tessera_stac.publisher.lifeline import alive
    from tests.memory import descendants

    script = (
        "import os\n"
        "from tessera_stac.publisher.engines.dask_engine import DaskEngine\n"
        "from tessera_stac.publisher.engines.local import probe\n"
        "with DaskEngine(n_workers=2) as engine:\n"
        "    pids = engine.client.run(os.getpid)\n"
        "    print('go', *pids.values(), flush=True)\n"
        "    list(engine.map(probe, [(i, 'sleep') for i in range(8)]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line and line[0] == b"go", line
    workers = {int(p) for p in line[1:]}
    assert len(workers) == 2 and all(alive(p) for p in workers)
    time.sleep(1)  # tasks running in the workers
    family = (descendants(proc.pid) - {proc.pid}) | workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    while any(alive(p) for p in family) and time.monotonic() < killed + 10:
        time.sleep(0.05)
    print(f"workers gone {time.monotonic() - killed:.2f} s after kill -9 of their parent")
    left = [p for p in family if alive(p)]
    for pid in left:  # do not leak them into the rest of the run
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind 10 s after kill -9 of their parent: {left}"

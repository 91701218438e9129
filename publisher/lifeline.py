"""Worker processes die with the process that started them (``kill -9`` of ``publish``).

A process pool's workers outlive a parent killed with SIGKILL: nothing tells them, and they
go on writing, then idle forever. ``die_with`` is the pool's worker initializer: on Linux the
worker asks the kernel for SIGKILL when its own parent goes (``prctl(PR_SET_PDEATHSIG)``; the
parent is the publishing process with ``spawn``, the forkserver with ``forkserver``), and a
daemon thread watches the publishing process itself (whatever the start method, also where
``prctl`` does not exist) and ends the worker within ``interval`` seconds of its death.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie - dead, not yet reaped - counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog remains
        pass


def die_with(parent_pid: int, interval: float = 0.5) -> None:
    """Pool worker initializer: end this worker when ``parent_pid`` is gone."""
    _parent_death_signal()

    def watch() -> None:
        while alive(parent_pid):
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="tessera-stac-lifeline", daemon=True).start()

"""Peak resident memory of a process and its descendants, sampled from /proc (Linux)."""

from __future__ import annotations

import os
import threading
import time


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = {pid}
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in found]
        found.update(kids)
        todo += kids
    return found


def rss(pid: int) -> int:
    """Resident bytes of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class TreeWatch:
    """Samples a process tree every ``interval`` s: ``peak_one`` (the largest process) and
    ``peak_tree`` (the whole tree at once), in bytes."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_one = 0
        self.peak_tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = [rss(p) for p in descendants(self.pid)]
            self.peak_one = max(self.peak_one, max(sizes, default=0))
            self.peak_tree = max(self.peak_tree, sum(sizes))
            time.sleep(self.interval)

    def stop(self) -> TreeWatch:
        self._stop.set()
        self._thread.join()
        return self

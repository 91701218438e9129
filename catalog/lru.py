"""A thread-safe, bounded LRU: what every in-process cache of the project keeps its entries
in (the API's per-worker caches, :mod:`tessera_stac.api.caches`; the publisher's watershed
outlines, :func:`tessera_stac.publisher.watersheds.layer.footprint`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class LruCache:
    """A thread-safe LRU of at most ``size`` entries (0: nothing is kept)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value of ``key`` (None when absent)."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        """Keep ``value`` under ``key``, dropping the least recently used past ``size``."""
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def items(self) -> list[tuple[Any, Any]]:
        """A snapshot of the entries, least recently used first."""
        with self._lock:
            return list(self._entries.items())

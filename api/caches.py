"""Bounded per-worker caches of the API: the thread-safe LRU (the catalog's
:class:`~tessera_stac.catalog.lru.LruCache`, here for the API's modules), the identity of a
local file's version, and a pool of open rasterio datasets.

Every cache here is bounded by a setting (``TILE_*_CACHE_SIZE``, the watershed, class-table
and head caches' sizes) and keyed so that nothing kept can go stale: files by
:func:`file_version` (path, size, modification time, inode), so a republished file is a new
key. Used by the map tiles (:mod:`tessera_stac.api.budget`, :mod:`tessera_stac.api.kernel_tiles`),
the similarity vectors, the watershed and class tables and the trained heads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from tessera_stac.catalog.lru import LruCache

__all__ = ["DatasetPool", "KeptTileGeometry", "LruCache", "file_version"]

#: answers of :meth:`KeptTileGeometry.tile_exists` (a few bytes each)
TILE_EXISTS_CACHE_SIZE = 4096
#: readers' grids in a tile matrix set's CRS (:class:`KeptTileGeometry`; ~100 bytes each)
GRID_CACHE_SIZE = 1024


def file_version(path: str) -> tuple[str, int, int, int] | None:
    """(path, size, modification time, inode) of a local file, None when it is not one: what
    the kernel's caches key a file by, so a file rewritten or replaced (a republish) is a new
    key and never meets what was kept of the old one."""
    if not path.startswith("/") or path.startswith("/vsi"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_size, st.st_mtime_ns, st.st_ino


class DatasetPool:
    """Open rasterio datasets of local files, kept idle between requests (per worker): a
    reader checks one out for its own use (a GDAL handle is never shared by two readers at
    once) and returns it when it closes. At most ``size`` idle handles, least recently used
    closed first; keyed by :func:`file_version`, so a rewritten file is opened anew (its old
    handles are closed when the new version is first opened, or as they are returned)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: OrderedDict[tuple[str, int, int, int], list[Any]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()
        #: datasets opened by :meth:`checkout` (tests check reuse with it)
        self.opened = 0

    def checkout(self, path: str) -> tuple[Any, Any] | None:
        """(an open dataset of ``path``, its key), or None (not a local file, or no pool)."""
        import rasterio

        key = file_version(path) if self.size > 0 else None
        if key is None:
            return None
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                self._count -= 1
                ds = idle.pop()
                if not idle:
                    del self._idle[key]
                return ds, key
            stale = [k for k in self._idle if k[0] == path]  # an older version of the file
            closing = [ds for k in stale for ds in self._idle.pop(k)]
            self._count -= len(closing)
        for old in closing:
            old.close()
        ds = rasterio.open(path)
        with self._lock:
            self.opened += 1
        return ds, key

    def checkin(self, ds: Any, key: tuple[str, int, int, int]) -> None:
        """Keep ``ds`` for the next reader of the same file version (or close it)."""
        if file_version(key[0]) != key:  # the file changed while it was read
            ds.close()
            return
        closing = []
        with self._lock:
            self._idle.setdefault(key, []).append(ds)
            self._idle.move_to_end(key)
            self._count += 1
            while self._count > self.size:
                old_key, old = next(iter(self._idle.items()))
                closing.append(old.pop(0))
                self._count -= 1
                if not old:
                    del self._idle[old_key]
        for old_ds in closing:
            old_ds.close()

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        """Close every idle dataset."""
        with self._lock:
            idle = [ds for group in self._idle.values() for ds in group]
            self._idle.clear()
            self._count = 0
        for ds in idle:
            ds.close()


class KeptTileGeometry:
    """Mixin for rio-tiler readers: the tile geometry they compute on every request answered
    from bounded per-worker caches. rio-tiler's ``tile_exists`` (the tile's bounds reprojected
    with 21 points a side, ~0.4 ms) is a function of the tile matrix set, the reader's CRS and
    bounds and the tile alone, and a map tile asks it up to three times (the item, then each
    asset); the reader's grid in the tile matrix set's CRS (GDAL's
    ``calculate_default_transform``, behind the min/max zoom every reader sets up) is a
    function of the grid alone."""

    _exists: LruCache = LruCache(TILE_EXISTS_CACHE_SIZE)
    _grids: LruCache = LruCache(GRID_CACHE_SIZE)

    def tile_exists(self, tile_x: int, tile_y: int, tile_z: int) -> bool:
        """rio-tiler's ``tile_exists``, kept."""
        this: Any = self
        tms = this.tms
        key = (
            tms.id,
            str(tms.rasterio_crs),
            tuple(tms.xy_bounds(tile_x, tile_y, tile_z)),
            str(this.crs),
            tuple(this.bounds),
        )
        known: bool | None = self._exists.get(key)
        if known is None:
            known = bool(super().tile_exists(tile_x, tile_y, tile_z))  # type: ignore[misc]
            self._exists.put(key, known)
        return known

    @property
    def _dst_geom_in_tms_crs(self) -> Any:
        """rio-tiler's grid of the reader in the tile matrix set's CRS, kept."""
        this: Any = self
        tms = this.tms
        transform = getattr(this, "transform", None)
        key = (
            tms.id,
            str(tms.rasterio_crs),
            str(this.crs),
            tuple(this.bounds),
            tuple(transform) if transform is not None else None,
            getattr(this, "width", None),
            getattr(this, "height", None),
        )
        grid = self._grids.get(key)
        if grid is None:
            grid = super()._dst_geom_in_tms_crs  # type: ignore[misc]
            self._grids.put(key, grid)
        return grid

"""Reading a local COG's internal tiles directly: only the blocks a read touches, decoded once.

GDAL's GeoTIFF reader caches a pixel-interleaved block as one cached block *per band*: a read of
one 64 x 64 x 128 block costs ~3-4 ms, five times its ZSTD decode (bench/results/points.md).
For local files the kernel therefore fetches the touched blocks' bytes itself (``pread`` at the
offsets the TIFF header gives) and lets tifffile + imagecodecs decode them (compression and
predictor, whatever the file uses) in a small thread pool, straight into pixel-interleaved
arrays ``(rows, cols, bands)``: the layout every caller wants (one pixel = one vector).

Points (the API's positions routes) avoid everything a read does not need: the header of a
local COG is its first IFD read with ``pread`` (:func:`_first_ifd`; tifffile parses anything
unusual), GDAL never opens it (:class:`LocalRaster` carries GDAL's georeferencing, from the
GeoTIFF tags), a codes block is decompressed only down to the lowest row a point needs
(streaming ZSTD) and predictors are undone on the points' rows only. Parsed headers (offsets,
byte counts, an open file) stay in a per-process LRU of :data:`OPEN_FILES` files; decoded
blocks read twice in :data:`BLOCKS` when a caller gives it a budget (the API does).

Remote COGs (``/vsicurl/``, ``/vsis3/``) and anything tifffile cannot describe are read through
rasterio with :data:`~tessera_stac.catalog.reader.gdal.GDAL_READ_OPTIONS`
(:func:`read_window` chooses), so both give the same arrays, bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from tessera_stac.catalog.errors import InputError

#: threads decoding blocks (imagecodecs releases the GIL while it decodes)
DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
#: open local COGs kept (file handle + parsed header)
OPEN_FILES = 128

_pool: ThreadPoolExecutor | None = None
_local = threading.local()
_tokens = itertools.count()


class BlockCache:
    """Decompressed blocks kept across reads, bounded by bytes (0: nothing is kept).

    An entry is a block's pixels, decoded (decompressed, predictor undone), ``(rows, cols,
    bands)``: all its rows, or for a point read the rows down to the lowest point (ZSTD stops
    there); keyed by its open image (a rewritten file is a new :class:`TiffBlocks`, so never
    a stale block) and block index. A read that needs more rows than an entry holds decodes
    the block again and replaces it. Entries are read-only arrays shared by the threads that
    read them: a kept pixel is an index, no decompression, no predictor.

    A block is kept the second time it is decompressed, not the first (the keys of the last
    :data:`SEEN` blocks are remembered): a read that passes over an area once (an
    ``/embeddings/area`` polygon, a request never repeated) neither pays for copying its
    blocks nor pushes out the blocks that are read again and again (a web map's neighbouring
    tiles, a script asking about the same places).
    """

    #: keys of blocks decompressed once and not kept (yet)
    SEEN = 65536

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[tuple[int, int], npt.NDArray[Any]] = OrderedDict()
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int], rows: int) -> npt.NDArray[Any] | None:
        """The entry of ``key`` when it holds at least ``rows`` rows."""
        with self._lock:
            found = self._entries.get(key)
            if found is None or found.shape[0] < rows:
                return None
            self._entries.move_to_end(key)
            return found

    def admits(self, key: tuple[int, int], nbytes: int) -> bool:
        """Whether a block of ``nbytes`` just decompressed should be kept: the second time
        it is decompressed (the first time its key is remembered), or to replace an entry
        holding fewer rows; never past a quarter of the budget."""
        if not self.budget or nbytes > self.budget // 4:
            return False
        with self._lock:
            if key in self._entries:
                return True
            if key in self._seen:
                del self._seen[key]
                return True
            self._seen[key] = None
            while len(self._seen) > self.SEEN:
                self._seen.popitem(last=False)
            return False

    def keep(self, key: tuple[int, int], block: npt.NDArray[Any]) -> None:
        """Keep ``block`` (a fresh array, made read-only here) under ``key``, dropping the
        least recently used entries past the budget."""
        block.flags.writeable = False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= old.nbytes
            self._entries[key] = block
            self.used += block.nbytes
            self._trim()

    def _trim(self) -> None:
        while self.used > self.budget and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self.used -= dropped.nbytes

    def resize(self, budget: int) -> None:
        """A new budget (entries past it dropped, least recently used first; 0 forgets all)."""
        with self._lock:
            self.budget = max(0, budget)
            self._trim()
            if not self.budget:
                self._seen.clear()


#: decompressed blocks kept per process (:func:`set_block_cache`; none until a caller sets it)
BLOCKS = BlockCache(0)


def set_block_cache(budget: int) -> None:
    """Keep up to ``budget`` bytes of decompressed blocks per process (0: none)."""
    BLOCKS.resize(budget)


def _buffer(name: str, size: int) -> memoryview:
    """A reusable per-thread byte buffer of at least ``size`` bytes."""
    buf: bytearray | None = getattr(_local, name, None)
    if buf is None or len(buf) < size:
        buf = bytearray(size)
        setattr(_local, name, buf)
    return memoryview(buf)


_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="tessera-decode")
        return _pool


def warm_up(block_bytes: int = 64 * 64 * 128) -> None:
    """Start the decode threads and give each what its first block would make (its buffers
    for a ``block_bytes`` block, its ZSTD decompressor), and load imagecodecs' codecs: a
    server's first request then decodes at once (imagecodecs imports a codec on first use)."""
    import imagecodecs

    for name in ("zstd_decode", "delta_decode", "floatpred_decode"):
        getattr(imagecodecs, name)
    barrier = threading.Barrier(DECODE_THREADS)

    def prepare(_: int) -> None:
        for name in ("raw", "plain", "block"):
            _buffer(name, block_bytes)
        if _partial_zstd() is not None:
            import zstandard

            _local.zstd = getattr(_local, "zstd", None) or zstandard.ZstdDecompressor()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=10)  # every thread takes one

    list(_executor().map(prepare, range(DECODE_THREADS)))


def _images(tif: Any) -> list[Any]:
    """The images of a TIFF in file order: full resolution, then (in a COG) its overviews,
    largest first, as GDAL lists them; transparency masks left out."""
    return [p for p in tif.pages if not int(getattr(p, "subfiletype", 0) or 0) & 4]


def _zstd_prefix(data: memoryview, out: memoryview) -> None:
    """The first ``len(out)`` bytes of the ZSTD frame ``data``, decompressed into ``out``."""
    dctx = getattr(_local, "zstd", None)
    if dctx is None:
        import zstandard

        dctx = _local.zstd = zstandard.ZstdDecompressor()
    got = 0
    with dctx.stream_reader(data, read_across_frames=False) as stream:
        while got < len(out):
            n = stream.readinto(out[got:])
            if n == 0:
                raise OSError("the block holds less data than its size")
            got += n


@functools.cache
def _partial_zstd() -> Callable[[memoryview, memoryview], None] | None:
    """:func:`_zstd_prefix` when ``zstandard`` is installed (else blocks are decompressed
    whole by imagecodecs)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return None
    return _zstd_prefix


class TiffBlocks:
    """One image of a local tiled GeoTIFF (the full resolution, or an overview), read block
    by block.

    Attributes:
        height, width, bands: the image's size.
        block: ``(rows, cols)`` of its internal tiles.
        dtype: the sample type.
        level: 0 for the full resolution, ``k`` for the file's ``k``-th overview.
        levels: ``(height, width)`` of every image of the file (full resolution first).
    """

    def __init__(self, path: str, nodata: float | None = None, level: int = 0) -> None:
        import tifffile

        self.path = path
        self.level = level
        self._token = next(_tokens)  # this image's key in BLOCKS
        self._levels: tuple[tuple[int, int], ...] | None = None
        self._fh = open(path, "rb")  # noqa: SIM115 - kept open for pread, closed on release
        head = _first_ifd(self._fh.fileno()) if level == 0 else None
        if head is not None and self._from_header(head, nodata):
            return
        with tifffile.TiffFile(path) as tif:
            first = tif.pages.first
            if level == 0 and not int(getattr(first, "subfiletype", 0) or 0) & 4:
                images = [first]  # the overviews' headers are parsed when asked for (levels)
            else:
                images = _images(tif)
                self._levels = tuple((int(p.imagelength), int(p.imagewidth)) for p in images)
            #: georeferencing of the full resolution as GDAL would read it, when the header
            #: is simple enough to read it the same way (else None: open the file with GDAL)
            self.georef = _georeference(images[0])
            if nodata is None and self.georef is not None:
                nodata = self.georef.nodata  # GDAL's nodata is the same GDAL_NODATA tag
            self.nodata = nodata
            page = images[level]
            if not page.is_tiled or page.tiledepth != 1:
                raise ValueError(f"{path}: not a tiled 2-D image")
            if page.samplesperpixel > 1 and page.planarconfig != 1:
                raise ValueError(f"{path}: not pixel-interleaved")
            self.height, self.width = int(page.imagelength), int(page.imagewidth)
            self.bands = int(page.samplesperpixel)
            self.block = (int(page.tilelength), int(page.tilewidth))
            self.dtype = np.dtype(page.dtype)
            self._offsets = tuple(int(v) for v in page.dataoffsets)
            self._counts = tuple(int(v) for v in page.databytecounts)
            self._decode: Any = page.decode  # keeps what it needs (codec, predictor, tile shape)
            # Points need a few pixels of a block: for one-byte samples with horizontal
            # differencing under ZSTD, decompress and undo the differencing on their rows only
            self._diffs: Any = None
            if (
                int(page.predictor) == 2
                and int(page.compression) == 50000
                and self.dtype.itemsize == 1
                and self.dtype.kind in "iu"
            ):
                import imagecodecs

                self._diffs = imagecodecs.zstd_decode
            # ... and for little-endian floats with the floating-point predictor under ZSTD
            # (the scales), decompress the block and undo the predictor on their rows only
            self._floats = (
                int(page.predictor) == 3
                and int(page.compression) == 50000
                and self.dtype.kind == "f"
                and tif.byteorder == "<"
                and sys.byteorder == "little"
            )
        self.across = -(-self.width // self.block[1])
        self.down = -(-self.height // self.block[0])

    def _from_header(self, tags: dict[int, Any], nodata: float | None) -> bool:
        """The full resolution described from its raw tags (:func:`_first_ifd`), for the two
        layouts points read without tifffile's decoder (ZSTD with horizontal differencing of
        bytes, or with the floating-point predictor on little-endian floats); False for
        anything else (tifffile parses the file)."""
        try:
            depth = int(tags.get(32997, (1,))[0]), int(tags.get(32998, (1,))[0])
            if int(tags.get(254, (0,))[0]) & 4 or depth != (1, 1):
                return False  # a mask first, or a 3-D tile
            bands = int(tags.get(277, (1,))[0])
            bits = {int(v) for v in tags[258]}
            formats = {int(v) for v in tags.get(339, (1,))}
            if len(bits) != 1 or len(formats) != 1 or int(tags.get(284, (1,))[0]) != 1:
                return False
            kind = {1: "u", 2: "i", 3: "f"}[formats.pop()]
            dtype = np.dtype(f"<{kind}{bits.pop() // 8}")
            compression, predictor = int(tags[259][0]), int(tags.get(317, (1,))[0])
            diffs = predictor == 2 and dtype.itemsize == 1 and kind in "iu"
            floats = predictor == 3 and kind == "f" and sys.byteorder == "little"
            if compression != 50000 or not (diffs or floats):
                return False
            height, width = int(tags[257][0]), int(tags[256][0])
            block = (int(tags[323][0]), int(tags[322][0]))
            offsets = tuple(int(v) for v in tags[324])
            counts = tuple(int(v) for v in tags[325])
        except (KeyError, IndexError, TypeError, ValueError):
            return False
        if len(offsets) != len(counts) or len(offsets) != -(-height // block[0]) * -(
            -width // block[1]
        ):
            return False
        import imagecodecs

        self.georef = _georeference(tags)
        if nodata is None and self.georef is not None:
            nodata = self.georef.nodata
        self.nodata = nodata
        self.height, self.width, self.bands = height, width, bands
        self.block, self.dtype = block, dtype.newbyteorder("=")
        self._offsets, self._counts = offsets, counts
        self._decode = None  # tifffile's decoder, made when a whole block is decoded
        self._diffs = imagecodecs.zstd_decode if diffs else None
        self._floats = floats
        self.across = -(-self.width // self.block[1])
        self.down = -(-self.height // self.block[0])
        return True

    def _decoder(self) -> Any:
        """tifffile's decoder of this image's blocks (codec, predictor, tile shape)."""
        if self._decode is None:
            import tifffile

            with tifffile.TiffFile(self.path) as tif:
                self._decode = _images(tif)[self.level].decode
        return self._decode

    @property
    def levels(self) -> tuple[tuple[int, int], ...]:
        """``(height, width)`` of every image of the file, full resolution first."""
        if self._levels is None:
            import tifffile

            with tifffile.TiffFile(self.path) as tif:
                images = _images(tif)
                self._levels = tuple((int(p.imagelength), int(p.imagewidth)) for p in images)
        return self._levels

    @property
    def block_bytes(self) -> tuple[int, ...]:
        """Stored (compressed) bytes of each block, in TIFF tile order."""
        return self._counts

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def index(self, brow: int, bcol: int) -> int:
        """Index of block (row, col) in the TIFF's tile arrays."""
        return brow * self.across + bcol

    def _unreadable(self, index: int, exc: Exception) -> InputError:
        # the file's name only: messages reach API clients, server paths must not
        name = os.path.basename(self.path)
        return InputError(f"{name}: block {index} cannot be read or decoded ({exc})")

    def decode(self, index: int) -> npt.NDArray[Any]:
        """Block ``index`` decoded: ``(block rows, block cols, bands)`` (padding included).

        For the ZSTD + horizontal-differencing layout the result lives in this thread's buffer
        (valid until the thread's next decode) or in :data:`BLOCKS` (read-only): use it at once
        or copy it.

        Raises:
            InputError: the block is truncated or corrupt.
        """
        bh, bw = self.block
        count = self._counts[index]
        if count == 0:  # a sparse block: never written, all nodata
            fill = 0 if self.nodata is None else self.nodata
            return np.full((bh, bw, self.bands), fill, dtype=self.dtype)
        try:
            if self._diffs is not None:
                import imagecodecs

                key = (self._token, index)
                kept = BLOCKS.get(key, bh) if BLOCKS.budget else None
                if kept is not None:
                    return kept.view(self.dtype)
                size = bh * bw * self.bands
                block = np.frombuffer(_buffer("block", size), dtype=np.uint8, count=size)
                block = block.reshape(bh, bw, self.bands)
                imagecodecs.delta_decode(self._differences(index), axis=1, out=block)
                if BLOCKS.admits(key, size):
                    BLOCKS.keep(key, block.copy())
                return block.view(self.dtype)
            data = os.pread(self._fh.fileno(), count, self._offsets[index])
            if len(data) != count:
                raise OSError("truncated")
            segment = self._decoder()(data, index)[0]
        except Exception as exc:  # tifffile / imagecodecs raise their own types
            raise self._unreadable(index, exc) from exc
        return np.asarray(segment).reshape(bh, bw, self.bands)

    def _differences(self, index: int, rows: int | None = None) -> npt.NDArray[np.uint8]:
        """Block ``index`` decompressed, still differenced: ``(rows, cols, bands)`` bytes in a
        per-thread buffer (valid until this thread's next call). Errors as they come.

        ``rows``: only the block's first ``rows`` rows are needed. ZSTD decompresses a block
        front to back, so it stops there when it can (:func:`_partial_zstd`: a point in the top
        half of a block costs a quarter to a half of the full decompression); the rows below
        hold whatever the buffer held."""
        count = self._counts[index]
        bh, bw = self.block
        size = bh * bw * self.bands
        want = bh if rows is None else min(rows, bh)
        # per-thread buffers: fresh 0.5-2 MB allocations cost as much as the decompression
        raw, plain = _buffer("raw", count), _buffer("plain", size)
        if os.preadv(self._fh.fileno(), [raw[:count]], self._offsets[index]) != count:
            raise OSError("truncated")
        partial = _partial_zstd() if want < bh else None
        if partial is not None:
            partial(raw[:count], plain[: want * bw * self.bands])
        else:
            self._diffs(raw[:count], out=plain[:size])
        return np.frombuffer(plain, dtype=np.uint8, count=size).reshape(bh, bw, self.bands)

    def _float_pixels(
        self, index: int, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]
    ) -> npt.NDArray[Any]:
        """:meth:`pick` for ZSTD + floating-point predictor blocks: the block decompressed into
        this thread's buffer, the predictor (byte planes differenced along each row, rows
        independent) undone on the needed rows only, as tifffile does on the whole block."""
        import imagecodecs

        count = self._counts[index]
        bh, bw = self.block
        row_bytes = bw * self.bands * self.dtype.itemsize
        size = bh * row_bytes
        key = (self._token, index)
        raw, plain = _buffer("raw", count), _buffer("plain", size)
        if os.preadv(self._fh.fileno(), [raw[:count]], self._offsets[index]) != count:
            raise OSError("truncated")
        imagecodecs.zstd_decode(raw[:count], out=plain[:size])  # type: ignore[arg-type]
        encoded = np.frombuffer(plain, dtype=np.uint8, count=size).reshape(bh, row_bytes)
        if BLOCKS.admits(key, size):  # kept decoded whole: a later pick is an index
            whole = encoded.view(self.dtype).reshape(bh, bw, self.bands)
            decoded = imagecodecs.floatpred_decode(whole, axis=-2)
            BLOCKS.keep(key, decoded)
            picked_whole: npt.NDArray[Any] = decoded[rows, cols]
            return picked_whole
        needed, which = np.unique(rows, return_inverse=True)
        part = encoded[needed].view(self.dtype).reshape(len(needed), bw, self.bands)
        decoded = imagecodecs.floatpred_decode(part, axis=-2)
        picked: npt.NDArray[Any] = decoded[which, cols]
        return picked

    def kept_pixels(
        self,
        index: int,
        rows: npt.NDArray[np.int64],
        cols: npt.NDArray[np.int64],
        lowest: int | None = None,
    ) -> npt.NDArray[Any] | None:
        """:meth:`pick` from :data:`BLOCKS` when it keeps the block (down to the rows needed;
        ``lowest``: ``rows.max()`` when the caller knows it), else None: an index, no file
        read, no decompression, no predictor."""
        if not BLOCKS.budget:
            return None
        if self._floats:
            need = self.block[0]
        else:
            need = (int(rows.max()) if lowest is None else lowest) + 1
        kept = BLOCKS.get((self._token, index), need)
        if kept is None:
            return None
        picked: npt.NDArray[Any] = kept[rows, cols].view(self.dtype)
        return picked

    def pick(
        self, index: int, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]
    ) -> npt.NDArray[Any]:
        """Pixels ``(rows, cols)`` (within block ``index``) of every band: ``(k, bands)``.

        Raises:
            InputError: the block is truncated or corrupt.
        """
        found = self.kept_pixels(index, rows, cols)
        if found is not None:
            return found
        count = self._counts[index]
        if self._floats and count:
            try:
                return self._float_pixels(index, rows, cols)
            except Exception as exc:  # imagecodecs raises its own types
                raise self._unreadable(index, exc) from exc
        if self._diffs is None or count == 0:
            return self.decode(index)[rows, cols]
        want = int(rows.max()) + 1
        key = (self._token, index)
        try:
            diffs = self._differences(index, want)
            bw = self.block[1]
            if BLOCKS.admits(key, want * bw * self.bands):  # kept restored: a pick is an index
                import imagecodecs

                restored = np.empty((want, bw, self.bands), dtype=np.uint8)
                imagecodecs.delta_decode(diffs[:want], axis=1, out=restored)
                BLOCKS.keep(key, restored)
                picked_kept: npt.NDArray[Any] = restored[rows, cols].view(self.dtype)
                return picked_kept
        except Exception as exc:  # imagecodecs / zstandard raise their own types
            raise self._unreadable(index, exc) from exc
        # TIFF predictor 2: each sample minus the previous pixel's, modulo 2**8, along the row;
        # a pixel is the sum of its row's differences up to it
        if len(rows) <= 8:
            out = np.empty((len(rows), self.bands), dtype=np.uint8)
            for k, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
                np.add.reduce(diffs[r, : c + 1], axis=0, dtype=np.uint8, out=out[k])
            return out.view(self.dtype)
        needed, which = np.unique(rows, return_inverse=True)
        restored = np.cumsum(diffs[needed], axis=1, dtype=np.uint8)
        picked: npt.NDArray[Any] = restored[which, cols].view(self.dtype)
        return picked

    def read(
        self,
        r0: int,
        r1: int,
        c0: int,
        c1: int,
        bands: npt.NDArray[np.intp] | None = None,
    ) -> npt.NDArray[Any]:
        """Pixels ``[r0:r1, c0:c1]`` (inside the image) as ``(rows, cols, bands)``; ``bands``:
        0-based indices to keep.

        Each worker decodes a block into its own reusable buffer and copies the part inside
        the window straight into the result (no per-block allocation; the band selection
        happens in that copy, in the workers).
        """
        bh, bw = self.block
        count = self.bands if bands is None else len(bands)
        out = np.empty((r1 - r0, c1 - c0, count), dtype=self.dtype)
        if r1 <= r0 or c1 <= c0:
            return out
        cells = [
            (br, bc)
            for br in range(r0 // bh, (r1 - 1) // bh + 1)
            for bc in range(c0 // bw, (c1 - 1) // bw + 1)
        ]

        def fill(cell: tuple[int, int]) -> None:
            br, bc = cell
            block = self.decode(self.index(br, bc))
            y0, y1 = max(r0, br * bh), min(r1, (br + 1) * bh)
            x0, x1 = max(c0, bc * bw), min(c1, (bc + 1) * bw)
            part = block[y0 - br * bh : y1 - br * bh, x0 - bc * bw : x1 - bc * bw]
            out[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = part if bands is None else part[..., bands]

        if len(cells) == 1:
            fill(cells[0])
        else:
            for _ in _executor().map(fill, cells):
                pass
        return out


#: TIFF field types: struct code of one value
_TYPES = {1: "B", 2: "s", 3: "H", 4: "I", 5: "II", 6: "b", 7: "B", 8: "h", 9: "i", 10: "ii",
          11: "f", 12: "d", 16: "Q", 17: "q", 18: "Q"}  # fmt: skip
#: tags :func:`_first_ifd` reads (anything else in the IFD is skipped)
_WANTED = frozenset({254, 256, 257, 258, 259, 277, 284, 317, 322, 323, 324, 325, 339, 32997, 32998,
                     33550, 33922, 34264, 34735, 42113})  # fmt: skip


def _first_ifd(fd: int) -> dict[int, Any] | None:
    """The tags of a little-endian (Big)TIFF's first image that the kernel needs, as tuples
    (ASCII as str), read with one or two ``pread``: ~20x faster than tifffile's full parse,
    which is kept for everything else (None: not such a file, or anything unusual)."""
    import struct

    head = os.pread(fd, 65536, 0)
    if head[:2] != b"II":
        return None
    version = struct.unpack_from("<H", head, 2)[0]
    if version == 42:
        ifd, count_fmt, entry, inline = struct.unpack_from("<I", head, 4)[0], "<H", "<HHII", 4
    elif version == 43:
        ifd, count_fmt, entry, inline = struct.unpack_from("<Q", head, 8)[0], "<Q", "<HHQQ", 8
    else:
        return None
    size = struct.calcsize(entry)

    def data(offset: int, n: int) -> bytes:
        if offset + n <= len(head):
            return head[offset : offset + n]
        got = os.pread(fd, n, offset)
        if len(got) != n:
            raise ValueError("truncated")
        return got

    tags: dict[int, Any] = {}
    try:
        raw = data(ifd, 8)
        n = struct.unpack_from(count_fmt, raw)[0]
        first = ifd + struct.calcsize(count_fmt)
        table = data(first, n * size)
        for i in range(n):
            code, kind, count, value = struct.unpack_from(entry, table, i * size)
            if code not in _WANTED:
                continue
            fmt = _TYPES[kind]
            nbytes = struct.calcsize("<" + fmt) * count
            if nbytes <= inline:
                blob = table[i * size + size - inline : i * size + size - inline + nbytes]
            else:
                blob = data(value, nbytes)
            if kind == 2:
                tags[code] = blob.split(b"\x00", 1)[0].decode("ascii")
            else:
                tags[code] = struct.unpack("<" + fmt * count, blob)
    except (struct.error, KeyError, ValueError, UnicodeDecodeError, OSError):
        return None
    return tags


@dataclass(frozen=True)
class GeoReference:
    """What GDAL reads from a simple GeoTIFF header: EPSG code, affine transform (GDAL's
    order: ``a, b, c, d, e, f``), nodata."""

    epsg: int
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None


#: GeoKeys :func:`_georeference` understands: model type, raster type, citations, the EPSG
#: code of the projected or geographic CRS, linear/angular units. Any other key (a CRS built
#: from parameters, vertical CRS, ...): the file is opened with GDAL.
_GEOKEYS = frozenset({1024, 1025, 1026, 2048, 2049, 2054, 3072, 3073, 3076})


def _georeference(page: Any) -> GeoReference | None:
    """The georeferencing GDAL gives a GeoTIFF page (tifffile's, or ``{tag: value}``) whose
    header is simple: an EPSG-coded CRS, ``ModelPixelScale`` + one ``ModelTiepoint``,
    pixel-is-area; None for anything else."""
    tags = page if isinstance(page, dict) else {c: t.value for c, t in page.tags.items()}
    scale, tie, keys = (tags.get(code) for code in (33550, 33922, 34735))
    if 34264 in tags or scale is None or tie is None or keys is None:
        return None  # a ModelTransformation matrix, or not georeferenced this way
    try:
        sx, sy = float(scale[0]), float(scale[1])
        t = tuple(float(v) for v in tie)
        k = tuple(int(v) for v in keys)
        entries = {k[4 + 4 * i]: k[5 + 4 * i : 8 + 4 * i] for i in range(k[3])}
    except (TypeError, ValueError, IndexError):
        return None
    if len(t) != 6 or not (sx > 0 and sy > 0) or not set(entries) <= _GEOKEYS:
        return None
    values = {key: v[2] for key, v in entries.items() if v[0] == 0}  # values held inline
    if values.get(1025, 1) != 1 or values.get(3076, 9001) != 9001 or values.get(2054, 9102) != 9102:
        return None  # pixel-is-point (GDAL shifts half a pixel), or units other than m / degree
    model = values.get(1024)
    epsg = values.get(3072) if model == 1 else values.get(2048) if model == 2 else None
    if epsg is None or not 1024 <= epsg < 32767 or (model == 2 and 3072 in entries):
        return None
    nodata = None
    text = tags.get(42113)
    if text is not None:
        try:
            nodata = float(str(text).strip().rstrip("\x00"))
        except ValueError:
            return None
    transform = (sx, 0.0, t[3] - t[0] * sx, 0.0, -sy, t[4] + t[1] * sy)
    return GeoReference(epsg, transform, nodata)


@functools.lru_cache(maxsize=64)
def _crs(epsg: int) -> Any:
    from rasterio.crs import CRS

    return CRS.from_epsg(epsg)


class LocalRaster:
    """A local GeoTIFF the kernel reads itself, described by its own header (no GDAL open):
    the attributes of a rasterio dataset the reader functions use (``crs``, ``transform``,
    ``height``, ``width``, ``count``, ``dtypes``, ``nodata``, ``block_shapes``, ``name``,
    ``driver``, ``overviews``), with the values GDAL gives (tests compare them)."""

    driver = "GTiff"

    def __init__(self, blocks: TiffBlocks, georef: GeoReference) -> None:
        from affine import Affine

        self.blocks = blocks
        self.name = blocks.path
        self.crs = _crs(georef.epsg)
        self.transform = Affine(*georef.transform)
        self.height, self.width, self.count = blocks.height, blocks.width, blocks.bands
        self.dtypes = (blocks.dtype.name,) * blocks.bands
        self.nodata = georef.nodata
        self.block_shapes = [blocks.block] * blocks.bands
        self.closed = False

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    def overviews(self, band: int) -> list[int]:
        """Decimation factors of the file's overviews (GDAL's: width over overview width)."""
        return [round(self.width / w) for _, w in self.blocks.levels[1:]]

    def close(self) -> None:
        """Nothing to close: the file stays in the kernel's LRU of open files."""


def local_raster(path: str) -> LocalRaster | None:
    """``path`` as a :class:`LocalRaster` when the kernel can read it itself (a local tiled,
    pixel-interleaved GeoTIFF with a simple header; cached in the LRU of open files), else
    None (open it with GDAL)."""
    if path.startswith("/vsi"):
        return None
    found = _opened.get(path, None)
    if found is None or found.georef is None:
        return None
    return LocalRaster(found, found.georef)


class _Opened:
    """LRU of :class:`TiffBlocks` by (path, size, mtime, level): a rewritten file is opened
    anew."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[str, int, int, int], TiffBlocks | None] = OrderedDict()

    def get(self, path: str, nodata: float | None, level: int = 0) -> TiffBlocks | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (path, st.st_size, st.st_mtime_ns, level)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
        try:
            found: TiffBlocks | None = TiffBlocks(path, nodata, level)
        except Exception:
            found = None
        with self._lock:
            self._open[key] = found
            while len(self._open) > self.size:
                self._open.popitem(last=False)  # closed when no reader holds it any more
        return found


_opened = _Opened(OPEN_FILES)


def blocks_of(ds: Any, level: int = 0) -> TiffBlocks | None:
    """The direct block reader of an open rasterio dataset, when it is a local tiled GeoTIFF
    whose full-resolution image matches the dataset (and whose ``level``-th overview is the
    one GDAL lists as ``level``: same decimation factor); else None (read through GDAL)."""
    if isinstance(ds, LocalRaster) and level == 0:
        return ds.blocks
    if getattr(ds, "driver", None) != "GTiff":
        return None
    path = str(ds.name)
    if path.startswith("/vsi"):
        return None
    nodata = ds.nodata
    found = _opened.get(path, None if nodata is None else float(nodata), level)
    if found is None:
        return None
    full = found.levels[0] if level else (found.height, found.width)  # level 0: no overviews parsed
    if full != (ds.height, ds.width) or found.bands != ds.count:
        return None
    if level:
        factors = ds.overviews(1)
        if level > len(factors) or len(found.levels) != len(factors) + 1:
            return None
        if round(ds.width / found.width) != factors[level - 1]:
            return None
    if found.dtype != np.dtype(ds.dtypes[0]):
        return None
    return found


def read_window(ds: Any, r0: int, r1: int, c0: int, c1: int) -> npt.NDArray[Any]:
    """Pixels ``[r0:r1, c0:c1]`` of every band of ``ds``, pixel-interleaved ``(rows, cols,
    bands)``: decoded directly for local COGs, through GDAL otherwise (same values)."""
    found = blocks_of(ds)
    if found is not None:
        return found.read(r0, r1, c0, c1)
    from rasterio.windows import Window

    out = np.empty((r1 - r0, c1 - c0, ds.count), dtype=ds.dtypes[0])
    if r1 > r0 and c1 > c0:
        # GDAL writes straight into the interleaved buffer (the strides tell it how)
        ds.read(window=Window(c0, r0, c1 - c0, r1 - r0), out=out.transpose(2, 0, 1))
    return out


T = TypeVar("T")


def read_ahead(jobs: Iterable[Callable[[], T]]) -> Iterator[T]:
    """The results of ``jobs`` in order, each job run one step ahead in a background thread:
    the next strip is read and decoded while the caller works on this one. At most two results
    are alive at once (bounded memory)."""
    with ThreadPoolExecutor(1, thread_name_prefix="tessera-read-ahead") as ex:
        it = iter(jobs)
        first = next(it, None)
        if first is None:
            return
        pending = ex.submit(first)
        for job in it:
            following = ex.submit(job)
            yield pending.result()
            pending = following
        yield pending.result()


def _runs(cols: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs ``[(first, last), ...]`` of sorted unique ints."""
    runs: list[tuple[int, int]] = []
    for c in cols:
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    return runs


def _runs_of(items: list[T], n: int) -> list[list[T]]:
    """``items`` cut into at most ``n`` consecutive runs of near-equal length."""
    size = -(-len(items) // max(1, n))
    return [items[i : i + size] for i in range(0, len(items), size)]


def read_pixels(
    ds: Any, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[Any], int]:
    """Every band at pixels ``(rows, cols)`` (inside the image): ``(k, bands)``, and how many
    reads it took. Each touched block is decoded once (locally: only the touched blocks; through
    GDAL: each run of touched blocks in a block row, one read)."""
    out = np.empty((len(rows), ds.count), dtype=ds.dtypes[0])
    if len(rows) == 0:
        return out, 0
    found = blocks_of(ds)
    if found is not None:
        bh, bw = found.block
        which = (rows // bh) * found.across + cols // bw
        order = np.argsort(which, kind="stable")
        starts = np.flatnonzero(np.diff(which[order], prepend=-1))
        groups = touched = np.split(order, starts[1:])

        def pick(sel: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
            i = int(which[sel[0]])
            y0, x0 = (i // found.across) * bh, (i % found.across) * bw
            return found.pick(i, rows[sel] - y0, cols[sel] - x0)

        def pick_run(run: list[npt.NDArray[np.int64]]) -> list[npt.NDArray[Any]]:
            return [pick(sel) for sel in run]

        if BLOCKS.budget:  # the kept blocks first, here: an index each, not worth a thread
            missing = []
            in_rows, in_cols = rows % bh, cols % bw
            lowest = np.maximum.reduceat(in_rows[order], starts).tolist()
            indices = which[order[starts]].tolist()
            for sel, i, low in zip(groups, indices, lowest, strict=True):
                got = found.kept_pixels(i, in_rows[sel], in_cols[sel], low)
                if got is None:
                    missing.append(sel)
                else:
                    out[sel] = got
            if not missing:
                return out, len(touched)
            groups = missing

        # a few runs of neighbouring blocks per decode thread rather than a task per block
        # (a future per 64 px block cost more than the waiting saved; at most ~4 runs a thread
        # keeps the threads evenly busy)
        runs = _runs_of(groups, 4 * DECODE_THREADS)
        picked = _executor().map(pick_run, runs) if len(runs) > 1 else map(pick_run, runs)
        for run, values in zip(runs, picked, strict=True):
            for sel, got in zip(run, values, strict=True):
                out[sel] = got
        return out, len(touched)
    bh, bw = (int(v) for v in ds.block_shapes[0])
    reads = 0
    brow = rows // bh
    for br in np.unique(brow):
        in_row = np.flatnonzero(brow == br)
        for first, last in _runs(sorted(set((cols[in_row] // bw).tolist()))):
            c0, c1 = first * bw, min((last + 1) * bw, ds.width)
            r0, r1 = int(br) * bh, min((int(br) + 1) * bh, ds.height)
            sel = in_row[(cols[in_row] >= c0) & (cols[in_row] < c1)]
            out[sel] = read_window(ds, r0, r1, c0, c1)[rows[sel] - r0, cols[sel] - c0]
            reads += 1
    return out, reads

"""The frame-aware cache: an fsspec ``BaseCache`` that knows where every frame lives.

Registered as ``cache_type="dicom"``, so any fsspec file that takes a cache
(``s3fs``, ``gcsfs``, ``adlfs``, ``http`` ...) can use it::

    f = s3.open("bucket/slide.dcm", cache_type="dicom")

On its first read the cache fetches the header (one right-sized request that
grows only for a large header) and keeps every byte of it as the header block.
Reads inside the Pixel Data are then served from *frame blocks*: the exact byte
range of a frame's items plus the next item's 8-byte header (which highdicom
reads). A read spanning frames becomes one coalesced request. Frame blocks live
in an LRU bounded in bytes. Files without offset tables are indexed by a scan
with large concurrent windows; the heads of the items it saw are kept so that a
reader walking the items (as highdicom does) causes no request.
"""

from __future__ import annotations

import threading
from typing import Any

from fsspec.caching import register_cache

from hdfsspec._fork import renew_after_fork
from hdfsspec.cache.blocks import FrameBlocks, InFlight
from hdfsspec.cache.frames import FrameCache
from hdfsspec.errors import (
    FrameIndexError,
    NotDicomError,
    OffsetTableError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)

__all__ = ["DicomFrameCache"]

_TAIL_BLOCK = 1024 * 1024
_HEAD = 10  # item tag, length and two marker bytes, kept per item by a scan
_LAYOUT_ERRORS = (
    NotDicomError,
    TruncatedDicomError,
    OffsetTableError,
    FrameIndexError,
    UnsupportedTransferSyntaxError,
)
_TRANSIENT = (
    "_lock",
    "_scan",
    "_on_index",
    "_on_bad_index",
    "_blocks",
    "_in_flight",
    "_fetch_ranges",
    "progress",
    "_ahead",
    "_header_ahead",
)


class DicomFrameCache(FrameCache):
    """Frame-aware cache for DICOM objects.

    Parameters
    ----------
    blocksize : int
        Ignored (frames set the block sizes); accepted for fsspec compatibility.
    fetcher : callable
        ``fetcher(start, stop) -> bytes`` of the underlying file.
    size : int
        Object size in bytes.
    fetch_ranges : callable, optional
        ``fetch_ranges([(start, stop), ...]) -> [bytes, ...]``, fetching
        concurrently (the ``dicom`` filesystem passes the target's ``cat_ranges``).
        Without it, ranges are fetched one after the other through ``fetcher``.
    path : str, optional
        Name of the object for error messages (taken from the file if omitted).
    options : ReadOptions, optional
        Cache bound, first request size, scan window... Individual fields may also
        be given as keyword arguments (e.g. ``max_cache_bytes=2**28``).
    known : tuple of (FrameIndex, bytes), optional
        A persisted index and header bytes of this object: no header or index
        request is made for what they cover.
    on_index : callable, optional
        Called with ``(index, header bytes)`` when the cache has built an index.
    on_bad_index : callable, optional
        Called (once) when the object or its header contradicts the ``known`` index:
        the cache then learns the layout from the object (and ``on_index`` sees the
        new index); the caller discards the persisted entry.
    prefix : bytes, optional
        The first bytes of the object, already fetched (e.g. with its info).
    link : LinkModel, optional
        Cost model of the target (shared by the files of a filesystem); it learns
        from the requests this cache times, and plans the frame fetches.
    progress : bool, fsspec Callback or None
        Progress of scans of files without offset table (see :mod:`hdfsspec.cache.progress`):
        by default a bar on stderr once a scan has run for two seconds.
    """

    name = "dicom"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle what the cache learnt (header, index); not its blocks, lock or scan."""
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}
            if self._index is None:  # a partial scan restarts after unpickling
                state["_heads"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        renew_after_fork(self)
        self._scan, self._on_index, self._fetch_ranges, self.progress = None, None, None, None
        self._on_bad_index = None
        self._ahead = self._header_ahead = None
        self._blocks = FrameBlocks(self.options.max_cache_bytes)
        self._in_flight = InFlight()

    def close(self) -> None:
        """Release the frame blocks (fsspec calls this when the file closes)."""
        if self._scan is not None:
            self._scan.close()  # no more windows fetched ahead
        with self._lock:
            self._blocks.clear()
            self._heads.clear()
            self._tail, self._spare = None, (0, b"")

    # -- byte reads -----------------------------------------------------------------------
    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else max(0, start)
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        if self._layout_error is None:
            try:
                return self._from_object(lambda: self._fetch_known(start, stop))
            except _LAYOUT_ERRORS as exc:
                # not DICOM, or a layout we cannot trust: a cache stays transparent for
                # bytes (index / read_frames raise); ObjectChangedError propagates
                self._layout_error = exc
        return self._plain(start, stop)

    def _plain(self, start: int, stop: int) -> bytes:
        """Bytes of an object whose layout is unknown, as fsspec's read-ahead cache reads.

        Served from the first request's bytes, from the last block read, or from both
        where the block continues them; a miss reads ``first_request`` bytes (at least
        up to ``stop``) from ``start``, or from the end of the first request's bytes
        when ``start`` is within them.
        """
        with self._lock:
            prefix, (base, spare) = self._known_prefix, self._spare
            if stop <= len(prefix):
                return self._plain_hit(prefix[start:stop])
            if base <= start and stop <= base + len(spare):
                return self._plain_hit(spare[start - base : stop - base])
            if start < base <= len(prefix) and stop <= base + len(spare):  # across the seam
                return self._plain_hit(prefix[start:base] + spare[: stop - base])
            held = prefix[start:]
            first = start + len(held)
            end = min(self.size, max(stop, first + self.options.first_request))
            data = self._get([(first, end)], "other")[0]
            self._spare = (first, data)
            return held + data[: stop - first]

    def _plain_hit(self, data: bytes) -> bytes:
        self.hit_count += 1
        self.stats.hit("other")
        return data

    def _fetch_known(self, start: int, stop: int) -> bytes:
        prefix = self.parsed.prefix
        if len(self._known_prefix) > len(prefix):  # a persisted entry's header and tables
            prefix = self._known_prefix
        if stop <= len(prefix):
            self.hit_count += 1
            self.stats.hit("header")
            return prefix[start:stop]
        out = bytearray()
        pos = start
        if pos < len(prefix):
            out += prefix[pos:]
            pos = len(prefix)
        local: dict[int, tuple[int, bytes]] = {}
        while pos < stop:
            piece = self._piece(pos, stop, local)
            if not piece:  # a layout that does not tile the bytes (a damaged table): exact
                piece = self._get([(pos, stop)], "other")[0]
            out += piece
            pos += len(piece)
        return bytes(out)

    def _piece(self, pos: int, stop: int, local: dict[int, tuple[int, bytes]]) -> bytes:
        """Return the bytes from ``pos`` up to ``stop`` or the end of one known block."""
        index = self.view(offset=stop - 1)  # first: a scan also learns the item heads
        if self._heads and stop - pos <= _HEAD:  # a small read inside a known item head
            for base in range(pos, pos - _HEAD, -1):
                head = self._heads.get(base)
                if head is not None and stop <= base + len(head):
                    self.stats.hit("index")
                    return head[pos - base : stop - base]
        for base, table in self._tables:
            if base <= pos < base + len(table):
                self.stats.hit("index")
                return table[pos - base : stop - base]
        header_end = self.parsed.header_end
        if pos < header_end:  # the rest of an offset table the header bytes cut short
            held = len(self.parsed.prefix)
            rest = self._fetch_table(held, header_end)  # kept: it serves later reads too
            return rest[pos - held : min(stop, header_end) - held]
        frame = index.frame_at(pos)
        if frame >= 0:
            for f in (frame - 1, frame):
                block = local.get(f) or (self._blocks.get(f) if f >= 0 else None)
                if block is not None and block[0] <= pos < block[0] + len(block[1]):
                    local[f] = block
                    return block[1][pos - block[0] : stop - block[0]]
            last = index.frame_at(stop - 1)
            last = index.number_of_frames - 1 if last < 0 else last
            local.update(self._load(range(frame, last + 1)))
            block = local[frame]
            return block[1][pos - block[0] : stop - block[0]]
        return self._tail_piece(pos, stop)

    def _tail_piece(self, pos: int, stop: int) -> bytes:
        """Bytes after the Pixel Data (trailing elements, padding)."""
        tail = self._tail
        if tail is not None and tail[0] <= pos and stop <= tail[0] + len(tail[1]):
            self.stats.hit("other")
            return tail[1][pos - tail[0] : stop - tail[0]]
        end = min(self.size, max(stop, pos + _TAIL_BLOCK))
        data = self._get([(pos, end)], "other")[0]
        self._tail = (pos, data)
        return data[: stop - pos]


register_cache(DicomFrameCache, clobber=True)

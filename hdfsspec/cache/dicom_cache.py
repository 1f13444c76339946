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

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from fsspec.caching import BaseCache, register_cache

from hdfsspec._types import DEFAULT_OPTIONS, Fetch, FetchRanges, ReadOptions, StreamRanges
from hdfsspec.cache.blocks import FrameBlocks
from hdfsspec.cache.frames import FrameStore
from hdfsspec.cache.layout import Layout
from hdfsspec.cache.progress import Progress
from hdfsspec.cache.requests import Requests
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.dicom.parse import ParsedHeader
from hdfsspec.errors import (
    FrameIndexError,
    NotDicomError,
    OffsetTableError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)
from hdfsspec.io.link import LinkModel, link_sized_first_request
from hdfsspec.io.planning import FetchPlan
from hdfsspec.io.stats import CacheStats

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


class DicomFrameCache(BaseCache):
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
    tail : (int, bytes), optional
        ``(offset, bytes)`` of the end of the object, fetched in the same round as
        ``prefix``.
    tail_wanted : bool, optional
        Fetch the end of the object with the first header request (see
        :attr:`~hdfsspec.ReadOptions.tail_request`); the filesystem asks for it where
        the object is large and the last one it opened was a dual DICOM-TIFF file.
    on_prefix : callable, optional
        Called with the first bytes of the object once fetched (the filesystem learns
        from them whether to ask for the next object's end).
    link : LinkModel, optional
        Cost model of the target (shared by the files of a filesystem); it learns
        from the requests this cache times, and plans the frame fetches.
    stream_ranges : callable, optional
        ``stream_ranges(ranges, sink) -> Future | None``: GETs whose bodies are handed
        over as they arrive (the ``dicom`` filesystem's signed S3 and HTTP(S) reads);
        windows of frames read ahead then serve each frame once its bytes are in.
    progress : bool, fsspec Callback or None
        Progress of scans of files without offset table (see :mod:`hdfsspec.cache.progress`):
        by default a bar on stderr once a scan has run for two seconds.

    Attributes
    ----------
    layout : Layout
        What is learnt of the object: header, offset tables, frame index, the walk.
    frames : FrameStore
        The frames, fetched in coalesced rounds and kept in the frame blocks.
    requests : Requests
        Every request the three make: checked, counted (:attr:`stats`) and timed.
    """

    name = "dicom"

    def __init__(
        self,
        blocksize: int,
        fetcher: Fetch,
        size: int,
        fetch_ranges: FetchRanges | None = None,
        path: str | None = None,
        options: ReadOptions | None = None,
        known: tuple[FrameIndex, bytes] | None = None,
        on_index: Callable[[FrameIndex, bytes], None] | None = None,
        on_bad_index: Callable[[], None] | None = None,
        link: LinkModel | None = None,
        progress: Progress = None,
        prefix: bytes = b"",
        tail: tuple[int, bytes] | None = None,
        tail_wanted: bool = False,
        on_prefix: Callable[[bytes], None] | None = None,
        stream_ranges: StreamRanges | None = None,
        **overrides: Any,
    ) -> None:
        path = path or getattr(getattr(fetcher, "__self__", None), "path", None)
        self.requests = Requests(fetcher, size, fetch_ranges, path, link, stream_ranges)
        super().__init__(blocksize, fetcher, size)
        self.options = (options or DEFAULT_OPTIONS).updated(**overrides)
        if self.options.first_request is None:  # sized by the link
            first = link_sized_first_request(self.requests.link.estimate)
            self.options = self.options.updated(first_request=first)
        self.path = path
        if prefix:  # fetched for this file, with its info: one request (and the end: two)
            ends = [] if tail is None else [tail[1]]
            self.requests.fetched_before(len(prefix) + sum(map(len, ends)), 1 + len(ends))
        blocks = FrameBlocks(self.options.max_cache_bytes)
        self.layout = Layout(
            self.requests,
            self.options,
            blocks,
            known,
            on_index,
            on_bad_index,
            progress,
            prefix,
            tail,
            tail_wanted,
            on_prefix,
        )
        self.frames = FrameStore(self.layout, self.requests, blocks)
        self._tail: tuple[int, bytes] | None = None  # bytes after the Pixel Data
        self._spare: tuple[int, bytes] = (0, b"")  # the last block a plain read fetched
        self._last: tuple[int, int, bytes] = (0, 0, b"")  # the last frame a byte read ended in

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the bytes it keeps at hand for byte reads (read again on use)."""
        state = dict(self.__dict__)
        state.update(_tail=None, _spare=(0, b""), _last=(0, 0, b""))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled with new frame blocks (the layout and the frame store pickle what
        was learnt, header and index, without their blocks, locks or walk)."""
        self.__dict__.update(state)
        blocks = FrameBlocks(self.options.max_cache_bytes)
        self.layout.blocks = self.frames.blocks = blocks

    # fsspec's counters live with the requests, shared by the layout and the frame store
    @property
    def hit_count(self) -> int:
        return self.requests.hits

    @hit_count.setter
    def hit_count(self, value: int) -> None:
        self.requests.hits = value

    @property
    def miss_count(self) -> int:
        return self.requests.misses

    @miss_count.setter
    def miss_count(self, value: int) -> None:
        self.requests.misses = value

    @property
    def total_requested_bytes(self) -> int:
        return self.requests.requested

    @total_requested_bytes.setter
    def total_requested_bytes(self, value: int) -> None:
        self.requests.requested = value

    @property
    def stats(self) -> CacheStats:
        """Requests, bytes and hits per phase (header, index, frames, other)."""
        return self.requests.stats

    @property
    def link(self) -> LinkModel:
        """The cost model of the target, learnt from the requests this cache times."""
        return self.requests.link

    # -- the layout and the frames -----------------------------------------------------------
    @property
    def parsed(self) -> ParsedHeader:
        """The parsed header (fetched on first use; see :attr:`Layout.parsed`)."""
        return self.layout.parsed

    @property
    def metadata(self) -> ParsedHeader:
        """The header for its data set (see :attr:`Layout.metadata`)."""
        return self.layout.metadata

    @property
    def index(self) -> FrameIndex:
        """The complete frame index (built on first use; a walk goes to the end)."""
        return self.layout.view()

    def view(
        self, frames: int | None = None, offset: int | None = None, ahead: int = 0
    ) -> FrameIndex:
        """An index of at least the first ``frames`` frames (see :meth:`Layout.view`)."""
        return self.layout.view(frames, offset, ahead)

    def set_index(self, index: FrameIndex) -> None:
        """Use a known index (e.g. a persisted one) instead of building it."""
        self.layout.set_index(index)

    def check_range(self, wanted: np.ndarray) -> None:
        """Raise IndexError unless every frame of ``wanted`` is one of the object's."""
        self.frames.check_range(wanted)

    def read_frames(self, frames: Sequence[int], follow: bool = True) -> list[bytes]:
        """Return the encoded bytes of ``frames`` (0-based), fetched in one round
        (with the frames ahead of a sequential reader, see :meth:`FrameStore.read_frames`)."""
        return self.frames.read_frames(frames, follow)

    def prefetch(self, frames: Iterable[int]) -> None:
        """Fetch the blocks of ``frames`` (0-based) into the cache in one round."""
        self.frames.prefetch(frames)

    def frame_payload(self, frame: int, block: tuple[int, bytes]) -> bytes:
        """Return the encoded frame: its fragment values joined, or its native bytes."""
        return self.frames.frame_payload(frame, block)

    def plan(self, frames: Iterable[int]) -> FetchPlan:
        """Dry run: the fetch plan of reading ``frames`` now (see :meth:`FrameStore.plan`)."""
        return self.frames.plan(frames)

    def close(self) -> None:
        """Release the frame blocks (fsspec calls this when the file closes)."""
        layout = self.layout
        self.frames.readahead.close()  # no more frames fetched ahead of a reader
        self.requests.close()  # nor streamed
        if layout.scan is not None:
            layout.scan.close()  # no more windows of the walk fetched ahead
        with layout.lock:
            layout.blocks.clear()
            layout.heads.clear()
            self._tail, self._spare, self._last = None, (0, b""), (0, 0, b"")

    # -- byte reads -----------------------------------------------------------------------
    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else max(0, start)
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        if self.layout.error is None:
            try:
                return self.layout.from_object(lambda: self._fetch_known(start, stop))
            except _LAYOUT_ERRORS as exc:
                # not DICOM, or a layout we cannot trust: a cache stays transparent for
                # bytes (index / read_frames raise); ObjectChangedError propagates
                self.layout.error = exc
        return self._plain(start, stop)

    def _plain(self, start: int, stop: int) -> bytes:
        """Bytes of an object whose layout is unknown, as fsspec's read-ahead cache reads.

        Served from the first request's bytes, from the last block read, or from both
        where the block continues them; a miss reads ``first_request`` bytes (at least
        up to ``stop``) from ``start``, or from the end of the first request's bytes
        when ``start`` is within them.
        """
        with self.layout.lock:
            prefix, (base, spare) = self.layout.known_prefix, self._spare
            if stop <= len(prefix):
                return self._plain_hit(prefix[start:stop])
            if base <= start and stop <= base + len(spare):
                return self._plain_hit(spare[start - base : stop - base])
            if start < base <= len(prefix) and stop <= base + len(spare):  # across the seam
                return self._plain_hit(prefix[start:base] + spare[: stop - base])
            held = prefix[start:]
            first = start + len(held)
            end = min(self.size, max(stop, first + (self.options.first_request or 0)))
            data = self.requests.one(first, end, "other")
            self._spare = (first, data)
            return held + data[: stop - first]

    def _plain_hit(self, data: bytes) -> bytes:
        self.requests.hit("other")
        return data

    def _fetch_known(self, start: int, stop: int) -> bytes:
        prefix = self.parsed.prefix
        if len(self.layout.known_prefix) > len(prefix):  # a persisted entry's header and tables
            prefix = self.layout.known_prefix
        if stop <= len(prefix):
            self.requests.hit("header")
            pixels = self.parsed.header.pixel_data_offset
            if pixels is not None and stop > pixels:  # frames a reader walks already
                self.frames.readahead.later(self._follow(start, stop))
            return prefix[start:stop]
        base, end, block = self._last
        if base <= start and stop <= end:  # within the frame the last read ended in (an
            return block[start - base : stop - base]  # item's head, then its value): no step
        out = bytearray()
        pos = start
        if pos < len(prefix):
            out += prefix[pos:]
            pos = len(prefix)
        local: dict[int, tuple[int, bytes]] = {}
        ahead = self._follow(pos, stop)  # one read: one step of the access pattern
        while pos < stop:
            piece = self._piece(pos, stop, local, ahead)
            if not piece:  # a layout that does not tile the bytes (a damaged table): exact
                piece = self.requests.one(pos, stop, "other")
            out += piece
            pos += len(piece)
        self.frames.readahead.later(ahead)  # not fetched with a piece of this read
        return bytes(out)

    def _follow(self, pos: int, stop: int) -> list[int]:
        """The frames a read of ``[pos, stop)`` touches, as a step of the access pattern:
        the frames to fetch ahead (see :meth:`FrameStore.follow`)."""
        index = self.view(offset=stop - 1)
        first = index.frame_at(pos)
        if first < 0:
            return []
        last = _last_frame(index, stop)
        start = int(index.starts[first])
        if first == last and stop <= start + _HEAD and start in self.layout.heads:
            return []  # a head a walk already read (highdicom's own walk): no request
        return self.frames.follow(first, last)

    def _piece(
        self, pos: int, stop: int, local: dict[int, tuple[int, bytes]], ahead: list[int]
    ) -> bytes:
        """Return the bytes from ``pos`` up to ``stop`` or the end of one known block.

        The first piece that needs a request fetches the frames ``ahead`` with it (and
        empties the list).
        """
        index = self.view(offset=stop - 1)  # first: a scan also learns the item heads
        if self.layout.heads and stop - pos <= _HEAD:  # a small read inside a known item head
            for base in range(pos, pos - _HEAD, -1):
                head = self.layout.heads.get(base)
                if head is not None and stop <= base + len(head):
                    self.requests.hit("index")
                    return head[pos - base : stop - base]
        for base, table in self.layout.tables:
            if base <= pos < base + len(table):
                self.requests.hit("index")
                return table[pos - base : stop - base]
        header_end = self.parsed.header_end
        if pos < header_end:  # the rest of an offset table the header bytes cut short
            held = len(self.parsed.prefix)
            rest = self.layout.fetch_table(held, header_end)  # kept: it serves later reads too
            return rest[pos - held : min(stop, header_end) - held]
        frame = index.frame_at(pos)
        if frame >= 0:
            # its own block first: a read of its item's head (which the block before also
            # ends with) then leaves this frame remembered, and the reads of the rest of
            # the item need no step of the pattern (pydicom: tag, then length)
            for f in (frame, frame - 1):
                block = local.get(f) or (self.frames.blocks.get(f) if f >= 0 else None)
                if block is not None and block[0] <= pos < block[0] + len(block[1]):
                    local[f] = block
                    self._remember(index, f, block)
                    return block[1][pos - block[0] : stop - block[0]]
            last = _last_frame(index, stop)
            local.update(self.frames.load_with(list(range(frame, last + 1)), ahead[:]))
            ahead.clear()
            block = local[frame]
            self._remember(index, frame, block)
            return block[1][pos - block[0] : stop - block[0]]
        n = index.number_of_frames
        block = (local.get(n - 1) or self.frames.blocks.get(n - 1)) if n else None
        if block is not None and block[0] <= pos and stop <= block[0] + len(block[1]):
            return block[1][pos - block[0] : stop - block[0]]  # the delimiter after the last
        return self._tail_piece(pos, stop)

    def _remember(self, index: FrameIndex, frame: int, block: tuple[int, bytes]) -> None:
        """The frame a byte read ended in: the next reads within its own items (not the
        next item's head its block ends with) are served without a step of the pattern."""
        start, data = block
        end = int(index.stops[frame]) if frame < index.number_of_frames else UNKNOWN
        self._last = (start, min(start + len(data), end if end != UNKNOWN else 0), data)

    def _tail_piece(self, pos: int, stop: int) -> bytes:
        """Bytes after the Pixel Data (trailing elements, padding)."""
        tail = self._tail
        if tail is not None and tail[0] <= pos and stop <= tail[0] + len(tail[1]):
            self.requests.hit("other")
            return tail[1][pos - tail[0] : stop - tail[0]]
        end = min(self.size, max(stop, pos + _TAIL_BLOCK))
        data = self.requests.one(pos, end, "other")
        self._tail = (pos, data)
        return data[: stop - pos]


def _last_frame(index: FrameIndex, stop: int) -> int:
    """The last frame a read ending at ``stop`` touches (the last of all beyond them)."""
    last = index.frame_at(stop - 1)
    return index.number_of_frames - 1 if last < 0 else last


register_cache(DicomFrameCache, clobber=True)

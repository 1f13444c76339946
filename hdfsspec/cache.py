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
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from fsspec.caching import BaseCache, register_cache

from hdfsspec._types import DEFAULT_OPTIONS, Fetch, FetchRanges, ReadOptions
from hdfsspec.ahead import Ahead
from hdfsspec.blocks import FrameBlocks
from hdfsspec.errors import (
    FrameIndexError,
    NotDicomError,
    ObjectChangedError,
    OffsetTableError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)
from hdfsspec.index import UNKNOWN, FrameIndex
from hdfsspec.items import find_items_end, join_fragments
from hdfsspec.link import LinkModel
from hdfsspec.parse import (
    ParsedHeader,
    bot_beyond,
    held_bot_index,
    index_from_tables,
    parse_header,
    tiff_index,
)
from hdfsspec.partial import PartialScan
from hdfsspec.planning import FetchPlan, block_range, block_ranges, plan_frames
from hdfsspec.progress import Progress
from hdfsspec.stats import CacheStats

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
    "_blocks",
    "_fetch_ranges",
    "progress",
    "_ahead",
    "_header_ahead",
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
    prefix : bytes, optional
        The first bytes of the object, already fetched (e.g. with its info).
    link : LinkModel, optional
        Cost model of the target (shared by the files of a filesystem); it learns
        from the requests this cache times, and plans the frame fetches.
    progress : bool, fsspec Callback or None
        Progress of scans of files without offset table (see :mod:`hdfsspec.progress`):
        by default a bar on stderr once a scan has run for two seconds.
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
        link: LinkModel | None = None,
        progress: Progress = None,
        prefix: bytes = b"",
        **overrides: Any,
    ) -> None:
        super().__init__(blocksize, fetcher, size)
        self.options = (options or DEFAULT_OPTIONS).updated(**overrides)
        self.path = path or getattr(getattr(fetcher, "__self__", None), "path", None)
        self._fetch_ranges = fetch_ranges
        self.link = link if link is not None else LinkModel()
        self.progress = progress
        self.stats = CacheStats()
        self._lock = threading.RLock()
        self._parsed: ParsedHeader | None = None
        self._index: FrameIndex | None = None
        self._heads: dict[int, bytes] = {}  # first bytes of the items a scan walked
        self._blocks = FrameBlocks(self.options.max_cache_bytes)
        self._tail: tuple[int, bytes] | None = None
        self._tables: list[tuple[int, bytes]] = []  # offset tables read after the header
        self._ahead: Ahead | None = None  # the rest of the BOT, read as soon as it is seen
        self._metadata: ParsedHeader | None = None  # the data set alone (see ``metadata``)
        self._header_ahead: Ahead | None = None  # the tables the metadata read deferred
        self._held: FrameIndex | None = None  # index from the BOT entries held
        self._held_known = False
        self._scan: PartialScan | None = None  # the walk, without offset table
        self._layout_error: Exception | None = None  # byte reads go straight through after it
        self._known_prefix = known[1] if known is not None else prefix
        if prefix:  # fetched for this file, with its info: one request
            self.stats.record("header", 1, len(prefix), rounds=1)
            self.miss_count += 1
            self.total_requested_bytes += len(prefix)
        if known is not None:
            self.set_index(known[0])
        self._on_index = on_index

    # -- network -----------------------------------------------------------------------
    def _get(
        self,
        ranges: Sequence[tuple[int, int]],
        phase: str,
        keep_whole: bool = False,
        timed: bool = True,
    ) -> list[bytes]:
        """Fetch ranges (concurrently when possible), checking every length.

        A server that ignores Range answers with the whole object: it is sliced,
        or returned whole when ``keep_whole`` (the header buffer then keeps it).
        ``timed=False`` is for requests that overlap others (a scan's windows,
        fetched ahead): their time says nothing of the link on its own (nor does that
        of any batch that overlapped another).
        """
        began = time.perf_counter()
        flight = self.stats.begin()
        try:
            if self._fetch_ranges is not None and len(ranges) > 1:
                out = self._fetch_ranges(list(ranges))
            else:
                out = [self.fetcher(a, b) for a, b in ranges]
        finally:
            alone = self.stats.end(flight)
        seconds = time.perf_counter() - began if timed else 0.0
        if timed and alone:  # overlapping batches share the link: their time is no sample
            self.link.observe([b - a for a, b in ranges], seconds)
        received = 0
        for k, ((a, b), data) in enumerate(zip(ranges, out, strict=True)):
            if isinstance(data, BaseException):
                raise data
            received += len(data)
            if len(data) == self.size != b - a:  # the server ignored Range: whole object
                if keep_whole:
                    continue
                out[k] = data = data[a:b]
            if len(data) != b - a:
                raise ObjectChangedError(
                    f"asked for bytes {a}-{b} and received {len(data)}: the object is shorter "
                    "than its reported size, or was replaced while being read",
                    path=self.path,
                    offset=a + len(data),
                )
        self.stats.record(phase, len(ranges), received, seconds)
        self.miss_count += len(ranges)
        self.total_requested_bytes += received
        return out

    def _fetch_one(self, start: int, stop: int) -> bytes:
        if stop <= len(self._known_prefix):  # header bytes fetched with the info, or persisted
            self.stats.hit("header")
            return self._known_prefix[start:stop]
        data = self._from_ahead(self._header_ahead, start, stop, "header")  # deferred tables
        return data if data is not None else self._fetch_header_now(start, stop)

    def _from_ahead(self, ahead: Ahead | None, start: int, stop: int, phase: str) -> bytes | None:
        """The bytes a read ahead fetched for exactly ``[start, stop)``, counted as a hit."""
        data = None if ahead is None else ahead.serve(start, stop)
        if data is not None:
            self.stats.hit(phase)
        return data

    def _fetch_header_now(self, start: int, stop: int) -> bytes:
        return self._get([(start, stop)], "header", keep_whole=True)[0]

    # -- layout --------------------------------------------------------------------------
    @property
    def parsed(self) -> ParsedHeader:
        """The parsed header (fetched on first use)."""
        if self._parsed is None:
            if isinstance(self._layout_error, NotDicomError):
                raise self._layout_error  # parsed once already: no second request
            with self._lock:
                if self._parsed is None:
                    self._set_parsed(
                        parse_header(
                            self._fetch_one, self.size, path=self.path, options=self.options
                        )
                    )
        assert self._parsed is not None
        return self._parsed

    def _set_parsed(self, parsed: ParsedHeader) -> None:
        self._parsed = parsed
        span = None if self._index is not None else bot_beyond(parsed)
        if span is not None:  # wanted by the first frame beyond those it holds
            self._ahead = Ahead(span, self._fetch_table_now)

    @property
    def metadata(self) -> ParsedHeader:
        """The header for its data set: :attr:`parsed`, or the data set alone.

        An Extended Offset Table beyond the first request is not waited for: the
        result then holds the data set before it (``complete`` False) while the
        table is read in the background, for :attr:`parsed` to use.
        """
        if self._parsed is not None:
            return self._parsed
        with self._lock:
            if self._parsed is None and self._metadata is None:
                meta = parse_header(
                    self._fetch_one,
                    self.size,
                    path=self.path,
                    options=self.options,
                    defer_tables=True,
                )
                if meta.complete:  # no table deferred: the header itself
                    self._set_parsed(meta)
                    return meta
                self._metadata = meta
                if len(meta.prefix) > len(self._known_prefix):  # the full parse starts there
                    self._known_prefix = meta.prefix
                assert meta.header.deferred is not None
                span = meta.header.deferred[1:]
                self._header_ahead = Ahead(span, self._fetch_header_now)
            return self._parsed if self._parsed is not None else self._metadata

    @property
    def index(self) -> FrameIndex:
        """The complete frame index (built on first use; a scan is walked to the end)."""
        return self.view()

    def view(
        self, frames: int | None = None, offset: int | None = None, ahead: int = 0
    ) -> FrameIndex:
        """An index of at least the first ``frames`` frames, or of the frames up to ``offset``.

        Without offset table the items are walked only as far as needed (every item
        already fetched is walked too): the index returned then holds the frames found
        so far. With neither argument, or once the walk has reached the end, it is the
        complete index. A non-zero ``ahead`` (a sequential reader passes its batch size)
        keeps a walk's windows in flight past the frames asked for.
        """
        if self._index is not None:
            return self._index
        parsed = self.parsed
        with self._lock:
            if self._index is None and self._scan is None and parsed.bot is None:
                held = self._held_bot()  # the table's first entries, held by the header
                if held is not None and (frames, offset) != (None, None):
                    if held.covers(frames, offset):
                        return held
            if self._index is None and self._scan is None:
                index = index_from_tables(parsed, self._fetch_table)
                if index is None:
                    index = tiff_index(parsed, self._fetch_table, self._fetch_tables)
                if index is None:
                    fetch = lambda r: self._get(r, "index", timed=False)  # noqa: E731
                    self._scan = PartialScan(
                        parsed,
                        fetch,
                        self.options,
                        self._blocks,
                        self._heads,
                        self.stats,
                        self.link,
                        self.progress,
                    )
                else:
                    self._built(index)
            if self._index is not None:
                return self._index
            assert self._scan is not None
            index, complete = self._scan.view(frames, offset, ahead)
            if complete:
                self._scan = None
                self._built(index)
            return index

    def _held_bot(self) -> FrameIndex | None:
        if not self._held_known:
            self._held, self._held_known = held_bot_index(self.parsed), True
        return self._held

    def _fetch_table(self, start: int, stop: int) -> bytes:
        """Read part of an offset table; fetched bytes stay to serve byte reads of it."""
        data = self._from_ahead(self._ahead, start, stop, "index")  # read since the header
        return data if data is not None else self._fetch_table_now(start, stop)

    def _fetch_table_now(self, start: int, stop: int) -> bytes:
        return self._fetch_tables([(start, stop)])[0]

    def _fetch_tables(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read ranges of offset tables, from the header bytes where they hold them."""
        prefix = self.parsed.prefix
        held = len(prefix)
        wanted = [(max(a, held), b) for a, b in ranges if b > held]
        fetched = iter(self._get(wanted, "index") if wanted else [])
        out = []
        for a, b in ranges:
            data = prefix[a:b]
            if b > held:
                rest = next(fetched)
                self._tables.append((max(a, held), rest))
                data += rest
            out.append(data)
        if not wanted:
            self.stats.hit("index", len(ranges))
        return out

    def _built(self, index: FrameIndex) -> None:
        self._index = index
        if self._on_index is not None:
            self._on_index(index, self._header_bytes())

    def _header_bytes(self) -> bytes:
        """The header bytes with the offset tables read after them, where contiguous.

        A Basic Offset Table beyond the first request is read with the index: the
        persisted entry must hold it too, or the entry would not cover its header.
        """
        data = self.parsed.prefix
        for base, piece in sorted(self._tables):
            if base <= len(data) < base + len(piece):
                data += piece[len(data) - base :]
        return data

    def set_index(self, index: FrameIndex) -> None:
        """Use a known index (e.g. a persisted one) instead of building it."""
        if index.size != self.size:
            raise ObjectChangedError(
                f"the index is for an object of {index.size} bytes, this one has {self.size}",
                path=self.path,
                offset=0,
            )
        with self._lock:
            self._index = index

    def _resolve_last(self) -> FrameIndex:
        """Find the end of the last frame by walking its items from its start."""
        index = self.index
        if index.number_of_frames == 0 or int(index.stops[-1]) != UNKNOWN:
            return index
        start = int(index.starts[-1])
        known = index.starts[1:] - index.starts[:-1] if index.number_of_frames > 1 else []
        guess = max(64 * 1024, 2 * int(max(known, default=0)) + 16)
        held = self.parsed.prefix[start:]  # the first request may already hold it
        fetch = lambda a, b: self._get([(a, b)], "frames")[0]  # noqa: E731
        pos, data = find_items_end(fetch, start, self.size, held, guess, path=self.path)
        resolved = index.with_last_stop(pos)
        with self._lock:
            self._built(resolved)  # saved again, now with the last stop
            _, bstop = block_range(resolved, index.number_of_frames - 1)
            if bstop <= start + len(data):
                self._remember(index.number_of_frames - 1, start, data[: bstop - start])
        return resolved

    # -- frame blocks -------------------------------------------------------------------
    def _remember(self, frame: int, start: int, data: bytes) -> None:
        self._blocks.put([(frame, (start, data))])

    def _load(self, frames: Iterable[int]) -> dict[int, tuple[int, bytes]]:
        """Return the blocks of ``frames``, fetching the missing ones in one round."""
        wanted = np.unique(np.fromiter((int(f) for f in frames), dtype=np.int64))
        if not wanted.size:
            return {}
        last = int(wanted[-1])
        index = self.view(frames=last + 1)
        if last == index.number_of_frames - 1 and int(index.stops[-1]) == UNKNOWN:
            index = self._resolve_last()
        prefix = self.parsed.prefix
        held = len(prefix)
        starts, stops = block_ranges(index, wanted)
        out: dict[int, tuple[int, bytes]] = {}
        absent = np.zeros(wanted.size, dtype=bool)
        for k, (f, stop) in enumerate(zip(wanted.tolist(), stops.tolist(), strict=True)):
            block = (0, prefix) if stop <= held else self._blocks.get(f)
            if block is None:
                absent[k] = True
            else:
                out[f] = block
        missing = wanted[absent].tolist()
        self.hit_count += len(out)
        self.stats.hit("frames", len(out))
        if missing:
            plan = self._plan(index, missing)
            datas = self._get(plan.ranges, "frames")
            bases = [a for a, _ in plan.ranges]
            fetched = list(zip(bases, datas, strict=True))
            self._keep_extra(index, fetched, set(missing))
            m_starts, m_stops = starts[absent], stops[absent]
            lows = np.maximum(m_starts, held)
            which = np.searchsorted(np.asarray(bases, dtype=np.int64), lows, side="right") - 1
            blocks = []
            for f, s, e, lo, k in zip(
                missing,
                m_starts.tolist(),
                m_stops.tolist(),
                lows.tolist(),
                which.tolist(),
                strict=True,
            ):
                a, data = fetched[k]
                head = prefix[s:held] if s < held else b""
                out[f] = (s, head + data[lo - a : e - a])
                blocks.append((f, out[f]))
            self._blocks.put(blocks)
        return out

    def _plan(self, index: FrameIndex, frames: Iterable[int]) -> FetchPlan:
        return plan_frames(
            index,
            frames,
            max_gap=self.options.max_gap,
            max_block=self.options.max_block,
            held_below=len(self.parsed.prefix),
            link=self.link.estimate,
            whole_below=self.options.max_cache_bytes // 2,
        )

    def _keep_extra(
        self, index: FrameIndex, fetched: list[tuple[int, bytes]], skip: set[int]
    ) -> None:
        """Remember the frames that bridged gaps or a whole read brought in for free."""
        starts = index.starts
        if index.number_of_frames and int(index.stops[-1]) == UNKNOWN:
            starts = starts[:-1]  # the end of the last frame is not known yet
        held = len(self.parsed.prefix)
        blocks = []
        for a, data in fetched:
            first = int(np.searchsorted(starts, a, side="left"))
            last = int(np.searchsorted(starts, a + len(data), side="left"))
            for f in range(first, last):
                if f in skip:
                    continue
                s, e = block_range(index, f)
                if held <= s and e <= a + len(data):
                    blocks.append((f, (s, data[s - a : e - a])))
        self._blocks.put(blocks)  # one LRU update, not one per frame

    def prefetch(self, frames: Iterable[int]) -> None:
        """Fetch the blocks of ``frames`` (0-based) into the cache in one round."""
        self._load(frames)

    def frame_payload(self, frame: int, block: tuple[int, bytes]) -> bytes:
        """Return the encoded frame: its fragment values joined, or its native bytes."""
        index = self.view(frames=frame + 1)
        start, stop = index.frame_range(frame)
        base, data = block
        if not index.encapsulated:
            return data[start - base : stop - base]
        return join_fragments(data, base, start, stop, frame=frame, path=self.path)

    def read_frames(self, frames: Sequence[int]) -> list[bytes]:
        """Return the encoded bytes of ``frames`` (0-based), fetched in one round."""
        blocks = self._load(frames)
        if not frames:
            return []
        index = self.view(frames=max(frames) + 1)
        if not index.encapsulated:
            return [self.frame_payload(f, blocks[f]) for f in frames]
        chosen = np.asarray(frames, dtype=np.int64)
        starts, stops = index.starts[chosen].tolist(), index.stops[chosen].tolist()
        path = self.path
        out = []
        for f, start, stop in zip(frames, starts, stops, strict=True):
            base, data = blocks[f]
            out.append(join_fragments(data, base, start, stop, frame=f, path=path))
        return out

    def plan(self, frames: Iterable[int]) -> FetchPlan:
        """Dry run: the :class:`~hdfsspec.planning.FetchPlan` of the frames not cached.

        Nothing is fetched, except the item headers of the last frame when it is
        asked for and only a Basic Offset Table gave its start.
        """
        frames = set(frames)
        index = self.view(frames=max(frames) + 1 if frames else 0)
        if index.number_of_frames - 1 in frames and int(index.stops[-1]) == UNKNOWN:
            index = self._resolve_last()
        missing = [f for f in frames if f not in self._blocks]
        return self._plan(index, missing)

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
        self._scan, self._on_index, self._fetch_ranges, self.progress = None, None, None, None
        self._ahead = self._header_ahead = None
        self._blocks = FrameBlocks(self.options.max_cache_bytes)

    def close(self) -> None:
        """Release the frame blocks (fsspec calls this when the file closes)."""
        if self._scan is not None:
            self._scan.close()  # no more windows fetched ahead
        with self._lock:
            self._blocks.clear()
            self._heads.clear()
            self._tail = None

    # -- byte reads -----------------------------------------------------------------------
    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else max(0, start)
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        if self._layout_error is None:
            try:
                return self._fetch_known(start, stop)
            except _LAYOUT_ERRORS as exc:
                # not DICOM, or a layout we cannot trust: a cache stays transparent for
                # bytes (index / read_frames raise); ObjectChangedError propagates
                self._layout_error = exc
        return self._get([(start, stop)], "other")[0]

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

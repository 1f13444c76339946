"""What the frame-aware cache learns of an object: its header, offset tables and frame index.

:class:`LayoutCache` is the base of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`, which
serves frames and bytes from what it learns. It holds the cache's state, makes every
request (:meth:`LayoutCache._get` checks each length, counts it per phase and teaches
the link model), parses the header on first use (or only the data set before a large
Extended Offset Table, for highdicom's open: :attr:`LayoutCache.metadata`), reads the
offset tables, and builds the frame index: from the tables, from a dual DICOM-TIFF
file's tile table, or by walking the items (:class:`~hdfsspec.cache.walk.PartialScan`),
only as far as the frames asked for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from fsspec.caching import BaseCache

from hdfsspec._fork import held_elsewhere, renew_after_fork
from hdfsspec._types import DEFAULT_OPTIONS, Fetch, FetchRanges, ReadOptions
from hdfsspec.cache.background import Ahead
from hdfsspec.cache.blocks import FrameBlocks, InFlight
from hdfsspec.cache.persist_entry import CONTRADICTED, DamagedEntry, vouch
from hdfsspec.cache.progress import Progress
from hdfsspec.cache.walk import PartialScan
from hdfsspec.dicom.fragment_items import find_items_end
from hdfsspec.dicom.frame_locations import (
    bot_beyond,
    held_bot_index,
    index_from_tables,
    tiff_index,
)
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.dicom.parse import ParsedHeader, parse_header
from hdfsspec.errors import NotDicomError, ObjectChangedError
from hdfsspec.io.link import LinkModel
from hdfsspec.io.planning import block_range
from hdfsspec.io.stats import CacheStats

__all__ = ["LayoutCache"]


class LayoutCache(BaseCache):
    """The part of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache` that learns the layout.

    Parameters are those of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`.
    """

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
        renew_after_fork(self)
        self._blocks = FrameBlocks(self.options.max_cache_bytes)
        self._in_flight = InFlight()  # frame blocks some thread is fetching now
        self._forget_layout()
        self._known_prefix = known[1] if known is not None else prefix
        self._stored = known is not None  # the index is a persisted one, not yet contradicted
        self._vouched = False  # ... checked against the header saved with it
        self._generation = 0  # persisted indexes dropped (see ``_drop_entry``)
        self._on_bad_index = on_bad_index
        if prefix:  # fetched for this file, with its info: one request
            self.stats.record("header", 1, len(prefix), rounds=1)
            self.miss_count += 1
            self.total_requested_bytes += len(prefix)
        if known is not None:
            self.set_index(known[0])
        self._on_index = on_index

    def _forget_layout(self) -> None:
        """Know nothing of the object's layout (as when opened without a persisted entry)."""
        self._parsed: ParsedHeader | None = None
        self._index: FrameIndex | None = None
        self._heads: dict[int, bytes] = {}  # first bytes of the items a scan walked
        self._tail: tuple[int, bytes] | None = None
        self._tables: list[tuple[int, bytes]] = []  # offset tables read after the header
        self._ahead: Ahead | None = None  # the rest of the BOT, read as soon as it is seen
        self._metadata: ParsedHeader | None = None  # the data set alone (see ``metadata``)
        self._header_ahead: Ahead | None = None  # the tables the metadata read deferred
        self._held: FrameIndex | None = None  # index from the BOT entries held
        self._held_known = False
        self._scan: PartialScan | None = None  # the walk, without offset table
        self._layout_error: Exception | None = None  # byte reads read ahead after it
        self._spare: tuple[int, bytes] = (0, b"")  # the last block such a read fetched
        self._known_prefix = b""

    def _drop_entry(self, generation: int | None = None) -> bool:
        """Drop a persisted index that the object or its header contradicts, its entry
        (``on_bad_index``) and all learnt with it: the layout is learnt from the object.

        Whether to try again: True if dropped now or since ``generation`` (by another
        thread), False if no persisted index is in use.
        """
        with self._lock:
            if generation is not None and generation != self._generation:
                return True
            if not self._stored:
                return False
            self._stored = self._vouched = False
            if self._on_bad_index is not None:
                self._on_bad_index()
            if self._scan is not None:
                self._scan.close()
            self._forget_layout()
            self._blocks.clear()
            self._generation += 1  # last: a call that sees it sees no trace of the entry
            return True

    def _after_fork(self) -> None:
        """In a forked child: a new lock (a thread of the parent may have held this one).

        What the lock guards is assigned whole (the parsed header, the index), so
        the child finds it as it was before or after; the scan, the blocks and the
        reads ahead renew themselves. A scan that thread was walking may be torn: the
        child walks again from the start.
        """
        if held_elsewhere(self._lock):
            self._lock = threading.RLock()
            self._scan, self._heads = None, {}

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
        data = self._get([(start, stop)], "header", keep_whole=True)[0]
        if start == 0 and len(data) > len(self._known_prefix):  # kept should the parse fail
            self._known_prefix = data
        return data

    # -- layout --------------------------------------------------------------------------
    @property
    def parsed(self) -> ParsedHeader:
        """The parsed header (fetched on first use)."""
        if self._parsed is None:
            if isinstance(self._layout_error, NotDicomError):
                raise self._layout_error  # parsed once already: no second request
            with self._lock:
                if self._parsed is None:
                    self._set_parsed(self._parse())
        assert self._parsed is not None
        return self._parsed

    def _parse(self, defer_tables: bool = False) -> ParsedHeader:
        """Parse the header; the header of a persisted entry must vouch for its index
        (:func:`~hdfsspec.cache.persist_entry.vouch`), or both go and the object is parsed."""
        parse = partial(
            parse_header, self._fetch_one, self.size, path=self.path, options=self.options
        )
        if not self._stored or self._vouched:
            return parse(defer_tables=defer_tables)
        try:
            parsed = parse(defer_tables=defer_tables)
            if parsed.complete and self._index is not None:
                vouch(self._index, parsed, self._known_prefix)
                self._vouched = True
            return parsed
        except (DamagedEntry, *CONTRADICTED):
            self._drop_entry()
        return parse(defer_tables=defer_tables)

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
                meta = self._parse(defer_tables=True)
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
        if self._stored and not self._vouched:
            self.parsed  # noqa: B018  (vouches for a persisted index, or drops it)
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

    @staticmethod
    def _last_guess(index: FrameIndex) -> int:
        """Bytes to read from the last frame's start to find its end: twice the largest frame."""
        known = index.starts[1:] - index.starts[:-1]
        return max(64 * 1024, 2 * int(known.max(initial=0)) + 16)

    def _resolve_last(self, held: bytes = b"") -> FrameIndex:
        """Find the end of the last frame by walking its items from its start.

        ``held`` are bytes from the last frame's start already fetched, if any.
        """
        return self._walk_last(held)[0]

    def _walk_last(self, held: bytes = b"") -> tuple[FrameIndex, tuple[int, bytes] | None]:
        """:meth:`_resolve_last`, and the last frame's block if the walk read all of it."""
        index = self.index
        if index.number_of_frames == 0 or int(index.stops[-1]) != UNKNOWN:
            return index, None
        start = int(index.starts[-1])
        guess = self._last_guess(index)
        if len(held) < len(self.parsed.prefix) - start:
            held = self.parsed.prefix[start:]  # the first request may already hold it
        fetch = lambda a, b: self._get([(a, b)], "frames")[0]  # noqa: E731
        pos, data = find_items_end(fetch, start, self.size, held, guess, path=self.path)
        resolved = index.with_last_stop(pos)
        block = None
        with self._lock:
            self._built(resolved)  # saved again, now with the last stop
            _, bstop = block_range(resolved, index.number_of_frames - 1)
            if bstop <= start + len(data):
                block = (start, data[: bstop - start])
                self._blocks.put([(index.number_of_frames - 1, block)])
        return resolved, block

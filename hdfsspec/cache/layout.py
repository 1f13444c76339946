"""What the frame-aware cache learns of an object: its header, offset tables and frame index.

:class:`Layout` is owned by :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`. It
parses the header on first use (or only the data set before a large Extended Offset
Table, for highdicom's open: :attr:`Layout.metadata`), reads the offset tables, and
builds the frame index: from the tables, from a dual DICOM-TIFF file's tile table, or
by walking the items (:class:`~hdfsspec.cache.walk.PartialScan`), only as far as the
frames asked for. It also holds a persisted index until the object contradicts it
(:meth:`Layout.drop_entry`, :meth:`Layout.from_object`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from hdfsspec._fork import held_elsewhere, renew_after_fork
from hdfsspec._types import ReadOptions
from hdfsspec.cache.background import Ahead
from hdfsspec.cache.blocks import FrameBlocks
from hdfsspec.cache.last_frame import last_guess, walk_to_last_end
from hdfsspec.cache.persist_entry import CONTRADICTED, DamagedEntry, vouch
from hdfsspec.cache.progress import Progress
from hdfsspec.cache.requests import Requests
from hdfsspec.cache.walk import PartialScan
from hdfsspec.dicom.frame_locations import (
    bot_beyond,
    held_bot_index,
    index_from_tables,
    tiff_index,
)
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.dicom.parse import ParsedHeader, parse_header
from hdfsspec.errors import NotDicomError, ObjectChangedError
from hdfsspec.io.link import tail_size

__all__ = ["Layout"]

_T = TypeVar("_T")
_TRANSIENT = (
    "lock",
    "scan",
    "blocks",
    "ahead",
    "_header_ahead",
    "_on_index",
    "_on_bad_index",
    "_on_prefix",
    "progress",
)


class Layout:
    """What one object's header and offset tables say of its layout, learnt on first use.

    Parameters
    ----------
    requests : Requests
        Fetches the header, the tables and the walk's windows (shared with the frame
        store and the byte reads).
    options : ReadOptions
        First request size, scan window, cache bound...
    blocks : FrameBlocks
        The frame blocks: a walk puts the frames it passes there, and a dropped
        persisted index takes them with it.
    known, on_index, on_bad_index, progress, prefix
        See :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`.
    """

    def __init__(
        self,
        requests: Requests,
        options: ReadOptions,
        blocks: FrameBlocks,
        known: tuple[FrameIndex, bytes] | None = None,
        on_index: Callable[[FrameIndex, bytes], None] | None = None,
        on_bad_index: Callable[[], None] | None = None,
        progress: Progress = None,
        prefix: bytes = b"",
        tail: tuple[int, bytes] | None = None,
        tail_wanted: bool = False,
        on_prefix: Callable[[bytes], None] | None = None,
    ) -> None:
        self.requests, self.options, self.blocks = requests, options, blocks
        self.size, self.path = requests.size, requests.path
        self.stats, self.link = requests.stats, requests.link
        self.progress = progress
        self.lock = threading.RLock()
        renew_after_fork(self)
        self._forget_layout()
        self.known_prefix = known[1] if known is not None else prefix
        self.tail, self._on_prefix = tail, on_prefix  # the object's end, in the first round
        self._tail_wanted = tail_wanted and tail is None and not prefix and known is None
        self.stored = known is not None  # the index is a persisted one, not yet contradicted
        self._vouched = False  # ... checked against the header saved with it
        self.generation = 0  # persisted indexes dropped (see ``drop_entry``)
        self._on_bad_index = on_bad_index
        if known is not None:
            self.set_index(known[0])
        self._on_index = on_index

    def _forget_layout(self) -> None:
        """Know nothing of the object's layout (as when opened without a persisted entry)."""
        self._parsed: ParsedHeader | None = None
        self._index: FrameIndex | None = None
        self.heads: dict[int, bytes] = {}  # first bytes of the items a scan walked
        self.tables: list[tuple[int, bytes]] = []  # offset tables read after the header
        self.ahead: Ahead | None = None  # the rest of the BOT, read as soon as it is seen
        self._metadata: ParsedHeader | None = None  # the data set alone (see ``metadata``)
        self._header_ahead: Ahead | None = None  # the tables the metadata read deferred
        self._held: FrameIndex | None = None  # index from the BOT entries held
        self._held_known = False
        self.scan: PartialScan | None = None  # the walk, without offset table
        self.error: Exception | None = None  # byte reads read ahead after it
        self.known_prefix = b""

    def __getstate__(self) -> dict[str, Any]:
        """Pickle what was learnt (header, index); not the lock, the walk or the callbacks.

        The frame blocks go too: the owner gives the unpickled layout new ones.
        """
        with self.lock:
            state = {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}
            if self._index is None:  # a partial walk restarts after unpickling
                state["heads"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()
        renew_after_fork(self)
        self.scan, self.ahead, self._header_ahead = None, None, None
        self._on_index = self._on_bad_index = self._on_prefix = None
        self.progress = None

    def drop_entry(self, generation: int | None = None) -> bool:
        """Drop a persisted index that the object or its header contradicts, its entry
        (``on_bad_index``) and all learnt with it: the layout is learnt from the object.

        Whether to try again: True if dropped now or since ``generation`` (by another
        thread), False if no persisted index is in use.
        """
        with self.lock:
            if generation is not None and generation != self.generation:
                return True
            if not self.stored:
                return False
            self.stored = self._vouched = False
            if self._on_bad_index is not None:
                self._on_bad_index()
            if self.scan is not None:
                self.scan.close()
            self._forget_layout()
            self.blocks.clear()
            self.generation += 1  # last: a call that sees it sees no trace of the entry
            return True

    def from_object(self, call: Callable[[], _T]) -> _T:
        """``call()``; again, on the layout learnt from the object, if a persisted index
        failed in it (no item where it puts one): the entry goes, the next open rebuilds.

        Also again, whatever it returned or raised, if another thread dropped the
        persisted index meanwhile: the call may have mixed the two layouts.
        """
        generation = self.generation
        try:
            out = call()
        except Exception as exc:
            changed = generation != self.generation
            if not (changed or isinstance(exc, CONTRADICTED)) or not self.drop_entry(generation):
                raise
            return call()
        return out if generation == self.generation else call()

    def _after_fork(self) -> None:
        """In a forked child: a new lock (a thread of the parent may have held this one).

        What the lock guards is assigned whole (the parsed header, the index), so
        the child finds it as it was before or after; the scan, the blocks and the
        reads ahead renew themselves. A scan that thread was walking may be torn: the
        child walks again from the start.
        """
        if held_elsewhere(self.lock):
            self.lock = threading.RLock()
            self.scan, self.heads = None, {}

    def _fetch_one(self, start: int, stop: int) -> bytes:
        if stop <= len(self.known_prefix):  # header bytes fetched with the info, or persisted
            self.requests.hit("header")
            return self.known_prefix[start:stop]
        data = self._from_ahead(self._header_ahead, start, stop, "header")  # deferred tables
        return data if data is not None else self._fetch_header_now(start, stop)

    def _from_ahead(self, ahead: Ahead | None, start: int, stop: int, phase: str) -> bytes | None:
        """The bytes a read ahead fetched for exactly ``[start, stop)``, counted as a hit."""
        data = None if ahead is None else ahead.serve(start, stop)
        if data is not None:
            self.requests.hit(phase)
        return data

    def _fetch_header_now(self, start: int, stop: int) -> bytes:
        ranges = [(start, stop)]
        if start == 0 and self._tail_wanted:  # once: the end of a large object with it
            self._tail_wanted = False
            first = self.options.first_request or stop
            end = tail_size(self.options.tail_request, first)
            if 0 < end <= self.size - stop:
                ranges.append((self.size - end, self.size))
        got = self.requests.get(ranges, "header", keep_whole=True)
        data = got[0]
        if start == 0 and self._on_prefix is not None:  # the filesystem learns from it
            self._on_prefix(data)
        if len(got) > 1:  # (a server that ignores Range sends the whole object: offset 0)
            self.tail = (self.size - len(got[1]), got[1])  # a dual DICOM-TIFF's tile table
        if start == 0 and len(data) > len(self.known_prefix):  # kept should the parse fail
            self.known_prefix = data
        return data

    # -- layout --------------------------------------------------------------------------
    @property
    def parsed(self) -> ParsedHeader:
        """The parsed header (fetched on first use)."""
        if self._parsed is None:
            if isinstance(self.error, NotDicomError):
                raise self.error  # parsed once already: no second request
            with self.lock:
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
        if not self.stored or self._vouched:
            return parse(defer_tables=defer_tables)
        try:
            parsed = parse(defer_tables=defer_tables)
            if parsed.complete and self._index is not None:
                vouch(self._index, parsed, self.known_prefix)
                self._vouched = True
            return parsed
        except (DamagedEntry, *CONTRADICTED):
            self.drop_entry()
        return parse(defer_tables=defer_tables)

    def _set_parsed(self, parsed: ParsedHeader) -> None:
        self._parsed = parsed
        span = None if self._index is not None else bot_beyond(parsed)
        if span is not None:  # wanted by the first frame beyond those it holds
            self.ahead = Ahead(span, self._fetch_table_now)

    @property
    def metadata(self) -> ParsedHeader:
        """The header for its data set: :attr:`parsed`, or the data set alone.

        An Extended Offset Table beyond the first request is not waited for: the
        result then holds the data set before it (``complete`` False) while the
        table is read in the background, for :attr:`parsed` to use.
        """
        if self._parsed is not None:
            return self._parsed
        with self.lock:
            if self._parsed is None and self._metadata is None:
                meta = self._parse(defer_tables=True)
                if meta.complete:  # no table deferred: the header itself
                    self._set_parsed(meta)
                    return meta
                self._metadata = meta
                if len(meta.prefix) > len(self.known_prefix):  # the full parse starts there
                    self.known_prefix = meta.prefix
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
        if self.stored and not self._vouched:
            self.parsed  # noqa: B018  (vouches for a persisted index, or drops it)
        if self._index is not None:
            return self._index
        parsed = self.parsed
        with self.lock:
            if self._index is None and self.scan is None and parsed.bot is None:
                held = self._held_bot()  # the table's first entries, held by the header
                if held is not None and (frames, offset) != (None, None):
                    if held.covers(frames, offset):
                        return held
            if self._index is None and self.scan is None:
                index = index_from_tables(parsed, self.fetch_table)
                if index is None:
                    index = tiff_index(parsed, self.fetch_table, self._fetch_tables)
                if index is None:
                    fetch = lambda r: self.requests.get(r, "index", timed=False)  # noqa: E731
                    self.scan = PartialScan(
                        parsed,
                        fetch,
                        self.options,
                        self.blocks,
                        self.heads,
                        self.stats,
                        self.link,
                        self.progress,
                    )
                else:
                    self._built(index)
            if self._index is not None:
                return self._index
            assert self.scan is not None
            index, complete = self.scan.view(frames, offset, ahead)
            if complete:
                self.scan = None
                self._built(index)
            return index

    def known(self) -> FrameIndex | None:
        """The index as far as it is known now, without a request: complete, or the
        frames a walk has found so far, or None."""
        if self._index is not None:
            return self._index
        scan = self.scan
        return scan.partial if scan is not None else None

    def _held_bot(self) -> FrameIndex | None:
        if not self._held_known:
            self._held, self._held_known = held_bot_index(self.parsed), True
        return self._held

    def fetch_table(self, start: int, stop: int) -> bytes:
        """Read part of an offset table; fetched bytes stay to serve byte reads of it."""
        data = self._from_ahead(self.ahead, start, stop, "index")  # read since the header
        return data if data is not None else self._fetch_table_now(start, stop)

    def _from_tail(self, start: int, stop: int) -> bytes | None:
        """``[start, stop)`` from the end of the object fetched in the first round, if held."""
        if self.tail is None:
            return None
        base, data = self.tail
        held = base <= start and stop <= base + len(data)
        return data[start - base : stop - base] if held else None

    def _fetch_table_now(self, start: int, stop: int) -> bytes:
        return self._fetch_tables([(start, stop)])[0]

    def _fetch_tables(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read ranges of offset tables, from the header bytes or the end of the object
        (fetched in the first round) where they hold them."""
        prefix = self.parsed.prefix
        held = len(prefix)
        beyond = [(max(a, held), b) for a, b in ranges if b > held]
        ends = {r: self._from_tail(*r) for r in beyond}  # held by the end of the object
        wanted = [r for r in beyond if ends[r] is None]
        fetched = iter(self.requests.get(wanted, "index") if wanted else [])
        out = []
        for a, b in ranges:
            data = prefix[a:b]
            if b > held:
                rest = ends[(max(a, held), b)]
                if rest is None:
                    rest = next(fetched)
                    self.tables.append((max(a, held), rest))
                data += rest
            out.append(data)
        # all from the header bytes, else those the end of the object held
        self.requests.hit("index", len(beyond) - len(wanted) if wanted else len(ranges))
        return out

    def _built(self, index: FrameIndex) -> None:
        self._index = index
        if self._on_index is not None:
            self._on_index(index, self.header_bytes())

    def header_bytes(self) -> bytes:
        """The header bytes with the offset tables read after them, where contiguous.

        A Basic Offset Table beyond the first request is read with the index: the
        persisted entry must hold it too, or the entry would not cover its header.
        """
        data = self.parsed.prefix
        for base, piece in sorted(self.tables):
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
        with self.lock:
            self._index = index

    last_guess = staticmethod(last_guess)  # bytes to read from the last frame's start

    def resolve_last(self, held: bytes = b"") -> FrameIndex:
        """Find the end of the last frame by walking its items from its start.

        ``held`` are bytes from the last frame's start already fetched, if any.
        """
        return self.walk_last(held)[0]

    def walk_last(self, held: bytes = b"") -> tuple[FrameIndex, tuple[int, bytes] | None]:
        """:meth:`resolve_last`, and the last frame's block if the walk read all of it
        (see :func:`~hdfsspec.cache.last_frame.walk_to_last_end`)."""
        index = self.index
        fetch = partial(self.requests.one, phase="frames")
        found = walk_to_last_end(index, self.parsed.prefix, held, fetch, self.size, self.path)
        if found is None:
            return index, None
        resolved, block = found
        with self.lock:
            self._built(resolved)  # saved again, now with the last stop
            if block is not None:
                self.blocks.put([(index.number_of_frames - 1, block)])
        return resolved, block

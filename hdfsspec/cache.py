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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from fsspec.caching import register_cache

from hdfsspec._fork import renew_after_fork
from hdfsspec.blocks import FrameBlocks
from hdfsspec.errors import (
    FrameIndexError,
    NotDicomError,
    OffsetTableError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)
from hdfsspec.index import UNKNOWN, FrameIndex
from hdfsspec.items import check_next_item, join_fragments
from hdfsspec.layout import LayoutCache
from hdfsspec.parse import number_of_frames
from hdfsspec.planning import FetchPlan, block_range, block_ranges, frame_numbers, plan_frames

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


class DicomFrameCache(LayoutCache):
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

    # -- frame blocks -------------------------------------------------------------------
    def check_range(self, wanted: np.ndarray) -> None:
        """Raise IndexError unless every frame of ``wanted`` is one of the object's.

        The number of frames comes from the header, not from the index: without an
        offset table the index may hold only the frames found so far, and numpy would
        read a negative number as one of those.
        """
        if not wanted.size:
            return
        parsed = self.parsed
        total = 0 if parsed.header.pixel_data_offset is None else number_of_frames(parsed)
        lo, hi = int(wanted.min()), int(wanted.max())
        if lo < 0 or hi >= total:
            raise IndexError(f"frame {lo if lo < 0 else hi} out of range (0..{total - 1})")

    def _load(self, frames: Iterable[int]) -> dict[int, tuple[int, bytes]]:
        """Return the blocks of ``frames``, fetching the missing ones in one round."""
        wanted = np.unique(np.fromiter((int(f) for f in frames), dtype=np.int64))
        self.check_range(wanted)
        if not wanted.size:
            return {}
        last = int(wanted[-1])
        index = self.view(frames=last + 1)
        if last == index.number_of_frames - 1 and int(index.stops[-1]) == UNKNOWN:
            out: dict[int, tuple[int, bytes]] = {}
            held = b""
            if wanted.size > 1:  # look for the last frame's end in the same round as the rest
                start = int(index.starts[-1])
                guess = (start, min(self.size, start + self._last_guess(index)))
                out, pieces = self._load_blocks(index, wanted[:-1], also=guess)
                held = max(
                    (d[start - a :] for a, d in pieces if a <= start < a + len(d)),
                    key=len,
                    default=b"",
                )
            index, block = self._walk_last(held)
            if block is not None:  # the walk read all of it (kept even past the bound)
                out[last] = block
                return out
            out.update(self._load_blocks(index, wanted[-1:])[0])
            return out
        return self._load_blocks(index, wanted)[0]

    def _load_blocks(
        self, index: FrameIndex, wanted: np.ndarray, also: tuple[int, int] | None = None
    ) -> tuple[dict[int, tuple[int, bytes]], list[tuple[int, bytes]]]:
        """The blocks of ``wanted`` (sorted, distinct, every end known), in one round.

        ``also`` is one more range to fetch in the same round, unless the first
        request or a fetched range holds it. Returns the blocks and the
        ``(offset, bytes)`` pieces fetched.
        """
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
        ranges = self._plan(index, missing).ranges if missing else []
        asked = list(ranges)
        if (
            also is not None
            and also[0] >= held
            and not any(a <= also[0] and also[1] <= b for a, b in ranges)
        ):
            asked.append(also)
        if not asked:
            return out, []
        datas = self._get(asked, "frames")
        fetched = [(a, data) for (a, _), data in zip(asked, datas, strict=True)]
        pieces, fetched = fetched, fetched[: len(ranges)]
        if not missing:
            return out, pieces
        bases = [a for a, _ in fetched]
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
        return out, pieces

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
        self._load(frame_numbers(frames))

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
        frames = frame_numbers(frames)
        blocks = self._load(frames)
        if not frames:
            return []
        index = self.view(frames=max(frames) + 1)
        if not index.encapsulated:
            return [self.frame_payload(f, blocks[f]) for f in frames]
        chosen = np.asarray(frames, dtype=np.int64)
        starts, stops = index.starts[chosen].tolist(), index.stops[chosen].tolist()
        path, single = self.path, index.offset_table == "tiff"  # a tile is one item
        out = []
        for f, start, stop in zip(frames, starts, stops, strict=True):
            base, data = blocks[f]
            out.append(join_fragments(data, base, start, stop, frame=f, path=path, single=single))
            if single and f + 1 < index.number_of_frames:  # the next tile's item, held too
                a, b = int(index.starts[f + 1]), int(index.stops[f + 1])
                if b != UNKNOWN:
                    check_next_item(data, base, a, b - a - 8, frame=f, path=path)
        return out

    def plan(self, frames: Iterable[int]) -> FetchPlan:
        """Dry run: the :class:`~hdfsspec.planning.FetchPlan` of reading ``frames`` now.

        Its ``frames`` are all of them, its ranges fetch those not cached. Nothing is
        fetched, except the item headers of the last frame when it is asked for and
        only a Basic Offset Table gave its start.
        """
        frames = set(frame_numbers(frames))
        self.check_range(np.fromiter(frames, dtype=np.int64))
        index = self.view(frames=max(frames) + 1 if frames else 0)
        if index.number_of_frames - 1 in frames and int(index.stops[-1]) == UNKNOWN:
            index = self._resolve_last()
        missing = [f for f in frames if f not in self._blocks]
        return FetchPlan(tuple(sorted(frames)), self._plan(index, missing).ranges)

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
        self._ahead = self._header_ahead = None
        self._blocks = FrameBlocks(self.options.max_cache_bytes)

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
                return self._fetch_known(start, stop)
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

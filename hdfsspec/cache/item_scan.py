"""Locate the fragments of encapsulated Pixel Data that has no offset table.

The items are walked with large windows (never three tiny reads per fragment),
fetched ahead in a pipeline: while the items of one window are walked, the next
``scan_concurrency`` windows are on their way, so the walk keeps the link busy
instead of alternating between fetching and walking. :class:`ItemScanner` is
resumable: it walks only as far as the frames (or bytes) asked for, so the first
region of a slide without offset table costs the bytes up to its frames, not the
object.

While the walk is partial, frames are recognised as they go (for the JPEG family a
new frame begins at each fragment with a start marker whose previous fragment ends
with an end marker, FFD9; where the two disagree the partial grouping stops; for RLE
at each fragment with an RLE header, one fragment a frame as the standard requires),
and a frame is complete once the next one is seen to begin. When the walk ends, the
fragments are grouped by :func:`hdfsspec.dicom.fragments.group_fragments`, and checked
against what was already served. Pure: reads through a ``fetch_ranges`` callable, no
fsspec.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from hdfsspec._fork import renew_after_fork
from hdfsspec._types import DEFAULT_OPTIONS, FetchRanges, ReadOptions
from hdfsspec.dicom.fragment_items import item_header
from hdfsspec.dicom.fragments import (
    END_MARKER,
    START_MARKERS,
    TAIL,
    ItemScan,
    ends_frame,
    rle_frame_head,
)
from hdfsspec.dicom.header import SEQUENCE_DELIMITER
from hdfsspec.errors import FrameIndexError, TruncatedDicomError
from hdfsspec.io.link import ramped_size

if TYPE_CHECKING:
    from hdfsspec.dicom.parse import ParsedHeader

__all__ = ["ItemScanner"]

_PIXEL_TAG = 0x7FE00010
_ITEM_HEAD = struct.Struct("<LL")  # an item's tag (as one little-endian word) and length
_ITEM_WORD = 0xE000FFFE  # (FFFE,E000) read as one little-endian word
_JPEG_FAMILY = "1.2.840.10008.1.2.4."
_RLE = "1.2.840.10008.1.2.5"
_PADDED = END_MARKER + b"\x00"
_MIN_ROUND = 256 * 1024  # a walk aimed at a few frames still fetches this much
_MARGIN = 1.02  # a walk aimed at given frames fetches this much more than the mean predicts


class ItemScanner:
    """A resumable walk of the fragment items of one object.

    Parameters
    ----------
    parsed : ParsedHeader
        The object's header (its prefix bytes are used first).
    fetch_ranges : callable
        Fetches a round of ranges (concurrently when the backend can).
    frames : int
        Number of Frames of the data set.
    options : ReadOptions
        Scan window and concurrency.
    on_chunk : callable, optional
        Receives ``(offset, bytes)`` of every round fetched.
    """

    def __init__(
        self,
        parsed: ParsedHeader,
        fetch_ranges: FetchRanges,
        frames: int,
        options: ReadOptions = DEFAULT_OPTIONS,
        on_chunk: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.parsed, self.frames, self.options = parsed, frames, options
        self._fetch_ranges, self._on_chunk = fetch_ranges, on_chunk
        self.chunk, self.base, self.pos = parsed.prefix, 0, parsed.header_end
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.heads: list[bytes] = []
        self.ended: list[bool] = []  # JPEG family: the fragment before each ends with FFD9
        self.first_fragments: list[int] = []  # fragment number that opens each frame
        self._converted = 0  # fragments also in the arrays below (see _fragment_arrays)
        self._starts_np = np.empty(0, dtype=np.int64)
        self._ends_np = np.empty(0, dtype=np.int64)
        self._firsts_converted = 0
        self._firsts_np = np.empty(0, dtype=np.int64)
        self.done, self.delimited = False, True
        self.requests = self.fetched = 0
        self._goal: int | None = None  # byte offset the current advance() aims at
        self._floor = 0  # ... and at least this far (no tiny requests for a near goal)
        self._pending: deque[tuple[int, int, Future[list[bytes]]]] = deque()
        self._next = 0  # where the next window fetched ahead starts
        self._pool: ThreadPoolExecutor | None = None
        renew_after_fork(self)
        syntax = parsed.header.transfer_syntax_uid
        self.mode = (
            "markers" if syntax.startswith(_JPEG_FAMILY) else "one" if syntax == _RLE else None
        )
        self._head = 16 if self.mode == "one" else 10  # bytes kept of each item
        self._markers = self.mode == "markers"  # tails are looked at (also once unsure)
        self._sure = 0  # frames complete when the grouping stopped (see _unsure)

    def _after_end(self, rel: int) -> bool:
        """Whether the fragment before the item at ``rel`` (in the buffer) ends a frame:
        an end marker, then nothing but zero padding, in its last bytes."""
        chunk = self.chunk
        if rel >= 3 and (chunk[rel - 2 : rel] == END_MARKER or chunk[rel - 3 : rel] == _PADDED):
            return True  # the usual ends (every fragment holds at least 2 bytes)
        value = self.offsets[-1] + 8 - self.base  # the previous fragment's value
        low = max(value, rel - TAIL)
        if low < 0:
            return False  # not in the buffer (windows start TAIL bytes early: not seen)
        return ends_frame(self.chunk[low:rel])

    def _boundary(self, rel: int, head: bytes) -> bool:
        """JPEG family: whether the item at ``rel`` begins a frame; stops the partial
        grouping where its start marker and the previous fragment's end disagree."""
        ended = self._after_end(rel)
        self.ended.append(ended)
        marked = head[8:10] in START_MARKERS
        if marked != ended:
            self._unsure()
        return marked and self.mode is not None

    def _unsure(self) -> None:
        """Fragments that cannot be grouped while walking: no frame beyond those already
        complete is complete before the end, where they are grouped (and checked
        against those already served)."""
        if self.mode is not None:
            self._sure = max(0, len(self.first_fragments) - 1)  # before the current one
        self.mode = None

    # -- fetching ahead -----------------------------------------------------------------
    def _limit(self) -> int:
        """No window is fetched beyond this offset (the frames asked for, or the end)."""
        size = self.parsed.size
        if self._goal is None:
            return size
        return min(size, max(self.pos + self._head, self._floor, self._goal))

    def _fill(self) -> None:
        """Keep ``scan_concurrency`` windows in flight, contiguous, up to the limit."""
        opts, limit = self.options, self._limit()
        first = self.requests == 0 and not self._pending
        if not self._pending:
            end = self.base + len(self.chunk)
            # continue where the last window ended when the skipped bytes are few: the
            # windows stay contiguous and the cache can keep their frames; else start
            # with the end of the fragment before the next item (its end marker)
            self._next = end if self.pos <= end + opts.scan_window else self.pos - TAIL
        free = opts.scan_concurrency - len(self._pending)
        for size in self._window_sizes(free, limit - self._next, first):
            if self._next >= limit:
                break
            start, stop = self._next, min(limit, self._next + size)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    opts.scan_concurrency, thread_name_prefix="hdfsspec-scan"
                )
            future = self._pool.submit(self._fetch_ranges, [(start, stop)])
            self._pending.append((start, stop, future))
            self._next = stop

    def _window_sizes(self, free: int, remaining: int, first: bool) -> list[int]:
        """Sizes of the next ``free`` windows, ``remaining`` bytes before the limit.

        The walk's first round is staggered (windows of 1/n, 2/n ... n/n of
        ``scan_window``, see :func:`~hdfsspec.io.link.ramped_size`): windows asked for
        together would arrive together and be walked one after the other while the
        link idles.
        """
        window, n = self.options.scan_window, self.options.scan_concurrency
        if first and remaining > window:
            return [ramped_size(window, n, k) for k in range(n - free + 1, n + 1)]
        return [window] * free

    def _take(self) -> None:
        """Wait for the next window fetched ahead and make it the walk's buffer."""
        self._fill()
        start, stop, future = self._pending.popleft()
        (data,) = future.result()
        self.requests += 1
        self.fetched += len(data)
        if len(data) != stop - start:
            raise TruncatedDicomError(
                "the object is shorter than its reported size",
                path=self.parsed.path,
                offset=start + len(data),
                tag=_PIXEL_TAG,
            )
        if self._on_chunk is not None:
            self._on_chunk(start, data)
        end = self.base + len(self.chunk)
        keep = max(self.base, self.pos - TAIL)  # the next item, and the end before it
        if start == end and keep < end:  # an item head, or the end before it, at the seam
            self.chunk, self.base = self.chunk[keep - self.base :] + data, keep
        else:
            self.chunk, self.base = data, start
        self._fill()  # the window just taken makes room for the next one

    def _after_fork(self) -> None:
        """In a forked child: the pool's threads are the parent's; its windows never come."""
        self._pending.clear()
        self._pool = None

    def close(self) -> None:
        """Stop fetching ahead (windows in flight are dropped)."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- walking -----------------------------------------------------------------------
    def step(self) -> None:
        """Walk one item (fetching a round of windows when needed)."""
        size, path, pos = self.parsed.size, self.parsed.path, self.pos
        if pos + 8 > size:
            if pos == size:  # no Sequence Delimitation Item: tolerated, as pydicom does
                self.done, self.delimited = True, False
                self.close()
                return
            raise TruncatedDicomError(
                "fragment item header cut off by the end of the object",
                path=path,
                offset=pos,
                tag=_PIXEL_TAG,
            )
        while min(pos + self._head, size) > self.base + len(self.chunk):  # header, first bytes
            self._take()
        rel = pos - self.base
        tag, length = item_header(
            self.chunk, rel, pos, size, path=path, error=FrameIndexError, what="scan"
        )
        if tag == SEQUENCE_DELIMITER:
            self.done = True
            self.close()
            return
        head = bytes(self.chunk[rel : rel + 8 + min(length, self._head - 8)])
        if self.mode == "one" and not rle_frame_head(head):
            self._unsure()
        if not self.offsets:
            self.first_fragments.append(0)
            self.ended.append(True)
        elif self._markers:
            if self._boundary(rel, head):
                self.first_fragments.append(len(self.offsets))
        elif self.mode is not None and rle_frame_head(head):
            self.first_fragments.append(len(self.offsets))
        self.offsets.append(pos)
        self.lengths.append(length)
        self.heads.append(head)
        self.pos = pos + 8 + length

    @property
    def end(self) -> int:
        """Offset after the last item walked (after the delimiter when done)."""
        return self.pos + 8 if self.done and self.delimited else self.pos

    # -- frames found so far --------------------------------------------------------------
    @property
    def complete(self) -> int:
        """Number of frames known to be complete."""
        if self.done:
            return self.frames
        if self.frames == 1:
            return 0
        if self.mode is None:
            return min(self.frames, self._sure)
        return min(self.frames, max(0, len(self.first_fragments) - 1))  # the next one began

    def _last_fragment(self, frame: int) -> int:
        firsts = self.first_fragments
        return firsts[frame + 1] - 1 if frame + 1 < len(firsts) else len(self.offsets) - 1

    def frame_ranges(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, stops)`` of the first ``count`` complete frames, as walked."""
        offsets, ends = self._fragment_arrays()
        firsts = self._firsts_array()[: count + 1]
        lasts = np.append(firsts[1:], len(offsets))[:count] - 1
        return offsets[firsts[:count]], ends[lasts]

    def _fragment_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and ends of the fragments walked, as arrays, converted from the lists
        only for the fragments walked since the last call (a sequential reader asks
        after every round: converting every list each time cost O(fragments^2))."""
        done, n = self._converted, len(self.offsets)
        if n > done:
            if n > self._starts_np.size:
                grown = max(1024, 2 * n)
                self._starts_np = np.resize(self._starts_np, grown)
                self._ends_np = np.resize(self._ends_np, grown)
            new = np.asarray(self.offsets[done:n], dtype=np.int64)
            self._starts_np[done:n] = new
            self._ends_np[done:n] = new + 8 + np.asarray(self.lengths[done:n], dtype=np.int64)
            self._converted = n
        return self._starts_np[:n], self._ends_np[:n]

    def _firsts_array(self) -> np.ndarray:
        """``first_fragments`` as an array, converted as it grows (as above)."""
        done, n = self._firsts_converted, len(self.first_fragments)
        if n > done:
            if n > self._firsts_np.size:
                self._firsts_np = np.resize(self._firsts_np, max(1024, 2 * n))
            self._firsts_np[done:n] = self.first_fragments[done:n]
            self._firsts_converted = n
        return self._firsts_np[:n]

    def walk_buffered(self) -> None:
        """Walk the items whose headers are already in memory (no request)."""
        while not self.done and min(self.pos + self._head, self.parsed.size) <= self.base + len(
            self.chunk
        ):
            if not self._walk_plain():
                self.step()  # the delimiter, the last bytes, a damaged header

    def _walk_plain(self, frames: int | None = None, offset: int | None = None) -> bool:
        """Walk buffered plain fragments in a tight loop; return whether it walked any.

        A plain fragment holds at least the bytes kept of it, ends inside the object,
        its header and first bytes are in the buffer, and (RLE) it begins a frame;
        anything else is left to :meth:`step`. It stops once ``frames`` frames would
        be complete, or past ``offset`` (:meth:`advance` then checks exactly).
        """
        size, chunk, base, pos = self.parsed.size, self.chunk, self.base, self.pos
        held = min(base + len(chunk), size)
        offsets, lengths, heads = self.offsets, self.lengths, self.heads
        firsts, keep, mode, markers = self.first_fragments, self._head, self.mode, self._markers
        enough = past = None  # frame starts at which ``frames`` are complete; ``offset``
        if mode is not None and self.frames != 1:  # else none is complete before the end
            enough = None if frames is None else frames + 1
            past = offset
        unpack, start = _ITEM_HEAD.unpack_from, pos
        ended, count = self.ended, len(offsets)
        if not count:
            return False  # step() opens the first frame
        enough = enough if enough is not None else size + 1  # never reached
        past = past if past is not None else size
        while pos + keep <= held:
            rel = pos - base
            word, length = unpack(chunk, rel)
            if word != _ITEM_WORD or length < keep - 8 or pos + 8 + length > size:
                break
            head = bytes(chunk[rel : rel + keep])
            if mode == "one":
                if not rle_frame_head(head):
                    break  # step() ends the partial grouping
                firsts.append(count)
            elif markers:  # as _boundary, its usual case inline
                if rel >= 3 and (
                    chunk.startswith(END_MARKER, rel - 2) or chunk.startswith(_PADDED, rel - 3)
                ):
                    ended.append(True)
                    if chunk.startswith(START_MARKERS, rel + 8):
                        if mode is not None:
                            firsts.append(count)
                    else:
                        self._unsure()
                        mode = None
                elif self._boundary(rel, head):
                    firsts.append(count)
                else:
                    mode = self.mode
            offsets.append(pos)
            lengths.append(length)
            heads.append(head)
            count += 1
            pos += 8 + length
            if len(firsts) >= enough or pos > past:
                break
        self.pos = pos
        return pos != start

    def advance(
        self, frames: int | None = None, offset: int | None = None, ahead: int = 0
    ) -> None:
        """Walk until ``frames`` frames are complete, or they cover ``offset``, or the end.

        A non-zero ``ahead`` (a sequential reader passes its batch size; only whether it
        is zero matters) keeps the pipeline of windows full past the frames asked for
        (``scan_concurrency`` windows in flight), where a walk aimed at given frames
        fetches no further than them.
        """
        opts = self.options
        round_ = min(_MIN_ROUND, opts.scan_window * opts.scan_concurrency)
        self._floor = self.base + len(self.chunk) + round_
        try:
            while not self.done:
                count = self.complete
                if frames is not None and count >= frames:
                    return
                if offset is not None and count:
                    last = self._last_fragment(count - 1)
                    if self.offsets[last] + 8 + self.lengths[last] > offset:
                        return
                if self._walk_plain(frames, offset):
                    continue
                goal = self._estimate(frames, offset)
                self._goal = None if goal is None or ahead else goal
                self.step()
        except BaseException:
            self.close()  # a failed walk fetches nothing more
            raise
        finally:
            self._goal = None

    def _estimate(self, frames: int | None, offset: int | None) -> int | None:
        """Where a walk to ``frames`` must get to, from the mean frame size so far (+2 %).

        Walks driven by byte reads (``offset``) keep full rounds: a reader walking the
        items one by one would otherwise make many small ones.
        """
        started = len(self.first_fragments)
        if offset is not None or frames is None or started < 2 or self.mode is None:
            return None
        per_frame = (self.pos - self.parsed.header_end) / started
        return self.pos + int((frames - started + 2) * per_frame * _MARGIN)

    def result(self) -> ItemScan:
        """The whole walk (walking to the end first)."""
        self.advance()
        return ItemScan(
            self.offsets,
            self.lengths,
            self.heads,
            self.end,
            self.requests,
            self.fetched,
            self.delimited,
            self.ended if self._markers else None,
        )

"""Frame blocks: the frames of an object, fetched in one coalesced round, kept in an LRU.

:class:`FrameStore` is owned by :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`:
from what the :class:`~hdfsspec.cache.layout.Layout` learns (the header, the frame
index), it serves frames. A frame's block is the exact byte range of its items plus
the next item's 8-byte header (which highdicom reads); the blocks of the frames a
call needs and does not hold are planned (:func:`~hdfsspec.io.planning.plan_frames`:
gaps worth bridging, one whole read when most of the object is wanted) and fetched
in one round; frames a bridged gap brought in are kept too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import partial

import numpy as np

from hdfsspec._types import MiB
from hdfsspec.cache.blocks import FrameBlocks, InFlight, split_held
from hdfsspec.cache.dry_run import dry_run
from hdfsspec.cache.frame_count import FrameCount
from hdfsspec.cache.layout import Layout
from hdfsspec.cache.payload import frame_payload, frames_payloads
from hdfsspec.cache.readahead import FramePattern, ReadAhead, frame_bytes
from hdfsspec.cache.requests import Requests
from hdfsspec.cache.streamed import StreamedBlocks
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.dicom.parse import number_of_frames
from hdfsspec.io.planning import (
    FetchPlan,
    block_range,
    block_ranges,
    distinct_frames,
    frame_numbers,
    plan_frames,
)

__all__ = ["FrameStore"]


class FrameStore:
    """The frames of one object: planned, fetched in one round, kept in the frame blocks.

    Parameters
    ----------
    layout : Layout
        Where the frames are (the header and the frame index).
    requests : Requests
        Fetches the frame blocks (shared with the layout).
    blocks : FrameBlocks
        The LRU of frame blocks, bounded in bytes (shared with the layout's walk).
    """

    def __init__(self, layout: Layout, requests: Requests, blocks: FrameBlocks) -> None:
        self._layout, self._requests, self.blocks = layout, requests, blocks
        self.options = layout.options
        self._in_flight = InFlight()  # frame blocks some thread is fetching now
        self._pattern: FramePattern | None = None  # made once the number of frames is known
        self.readahead = ReadAhead(self.pattern, self._load_ahead, self._holds, self._stream)
        self._local = threading.local()  # per thread: frames prefetched for a known job
        self._said = FrameCount(layout)  # the frames the header says it has

    def __getstate__(self) -> dict[str, object]:
        """Pickled without its blocks: the owner gives the unpickled store new ones."""
        skip = ("blocks", "_in_flight", "_pattern", "_local", "_said")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._in_flight = InFlight()
        self._pattern, self._local = None, threading.local()
        self._said = FrameCount(self._layout)

    # -- readahead ----------------------------------------------------------------------
    def pattern(self) -> FramePattern:
        """The access pattern of the frames (see :mod:`hdfsspec.cache.readahead`)."""
        if self._pattern is None:
            parsed = self._layout.parsed
            total = number_of_frames(parsed) if parsed.header.pixel_data_offset else 0
            sizes = partial(frame_bytes, self._layout.known)
            self._pattern = FramePattern(total, sizes, self._ahead_cap(), self._holds)
        return self._pattern

    def _ahead_cap(self) -> int:
        """Largest window ahead: what the link carries in two round trips (four where
        windows stream), at least 2 MiB and at most 16 MiB, within an eighth of the
        cache bound.

        A window read whole serves its first frame only once its last byte is in: a
        larger one makes its reader wait longer. A streamed one serves each frame as it
        comes, so its size costs no wait, only what a reader that stops leaves unread;
        and fewer, longer streams keep the link as full with fewer requests (a 19 MB
        loop over S3: 0.19 s in 7 requests with two round trips, 0.16 s in 5 with four).
        """
        link = self._requests.link.estimate
        rounds = 4 if self._requests.can_stream else 2
        carried = int(rounds * link.rtt * link.bandwidth)
        return max(1, min(self.options.max_cache_bytes // 8, max(2 * MiB, min(16 * MiB, carried))))

    def load_with(self, frames: list[int], ahead: list[int]) -> dict[int, tuple[int, bytes]]:
        """The blocks of ``frames``, fetched in one round with the frames ``ahead``.

        What fails in the frames ahead (the last frame of a cut object, say) is not the
        read's: it is loaded alone then, and the frames ahead are left to their own reads.
        """
        if not ahead:
            return self.load(frames)
        left = self._stream([*frames, *ahead])  # each frame served once its bytes are in
        if left is not None:
            if left and left[0] > max(frames):  # the last frame, whose end a walk finds
                self.readahead.later(left)
            return self.load(frames)
        try:
            return self.load([*frames, *ahead])
        except Exception:
            return self.load(frames)

    def _holds(self, frame: int) -> bool:
        """Whether ``frame`` is held: its block, or the header's bytes (the first request)."""
        if frame in self.blocks:
            return True
        span = self._known_block_range(frame)
        return span is not None and span[1] <= len(self._layout.parsed.prefix)

    def _load_ahead(self, frames: list[int]) -> object:
        return self._layout.from_object(lambda: self.load(frames))

    def _stream(self, frames: list[int]) -> list[int] | None:
        """Fetch the blocks of ``frames`` not held in one streamed round: a frame is
        served, and whoever waits for it woken, once its own bytes are in
        (:mod:`~hdfsspec.cache.streamed`). The frames are claimed now, in the caller's
        thread. Returns the frames left to load the usual way (the last frame, while its
        end is not known: a walk finds it), or None (nothing claimed) where the file
        cannot stream or the frames are not all known yet."""
        index = self._layout.known()
        if not self._requests.can_stream or index is None or not frames:
            return None
        wanted = distinct_frames(frames)
        left: list[int] = []
        top = int(wanted[-1])
        if top >= index.number_of_frames:
            return None
        if int(index.stops[top]) == UNKNOWN:
            if top != index.number_of_frames - 1:
                return None
            wanted, left = wanted[:-1], [top]
        missing = split_held(index, wanted, self._layout.parsed.prefix, self.blocks)[1]
        mine, _ = self._in_flight.claim(missing, each=True)
        if not mine:  # held, or some thread fetches them: the caller waits for it
            return left
        ranges = list(self._plan(index, mine).ranges)
        prefix = self._layout.parsed.prefix
        cut = StreamedBlocks(index, ranges, mine, prefix, self.blocks, self._in_flight)
        if self._requests.stream(ranges, "frames", cut.feed, cut.done):
            return left
        self._in_flight.release(mine)
        return None

    def follow(self, first: int, last: int) -> list[int]:
        """A read needs frames ``first..last``: the frames to fetch with them (see
        :meth:`~hdfsspec.cache.readahead.ReadAhead.follow`); none without readahead."""
        if not self.options.readahead:
            return []
        return self.readahead.follow(first, last)

    def _planned(self) -> set[int]:
        """Frames this thread prefetched for a known job and has not read yet (each
        thread's own: threads reading the same frames for their own jobs)."""
        planned: set[int] | None = getattr(self._local, "planned", None)
        if planned is None:
            planned = self._local.planned = set()
        return planned

    def _unplanned(self, frames: list[int]) -> bool:
        """Whether a read of ``frames`` is the reader's own, not one of a job handed over
        whole (:meth:`prefetch`: a region, a frame list), whose reads say nothing of what
        comes next."""
        planned = self._planned()
        if not planned or not planned.issuperset(frames):
            return True
        planned.difference_update(frames)
        return False

    # -- frame blocks -------------------------------------------------------------------
    def check_range(self, wanted: np.ndarray) -> None:
        """Raise IndexError unless every frame of ``wanted`` is one of the object's (see
        :meth:`~hdfsspec.cache.frame_count.FrameCount.check`)."""
        self._said.check(wanted)

    def load(self, frames: Iterable[int]) -> dict[int, tuple[int, bytes]]:
        """Return the blocks of ``frames``, fetching the missing ones in one round."""
        wanted = distinct_frames(frames)
        self.check_range(wanted)
        if not wanted.size:
            return {}
        last = int(wanted[-1])
        alone = self._held_alone(last) if wanted.size == 1 else None
        if alone is not None:  # one frame, held: a loop's read (nothing to plan)
            self._requests.hit("frames")
            return {last: alone}
        index = self._layout.view(frames=last + 1)
        if last == index.number_of_frames - 1 and int(index.stops[-1]) == UNKNOWN:
            mine, others = self._in_flight.claim([last])
            if not mine:  # another thread walks to the last frame's end now: its walk serves
                for event in others:
                    event.wait()
                return self.load(wanted)
            try:
                return self._load_with_last(wanted, index)
            finally:
                self._in_flight.release(mine)
        return self._load_blocks(index, wanted)[0]

    def _load_with_last(
        self, wanted: np.ndarray, index: FrameIndex
    ) -> dict[int, tuple[int, bytes]]:
        """:meth:`load` of frames up to the last, whose end is not known yet (the walk to it
        is claimed: one thread walks, others wait for it)."""
        last = int(wanted[-1])
        out: dict[int, tuple[int, bytes]] = {}
        held = b""
        if wanted.size > 1:  # look for the last frame's end in the same round as the rest
            start = int(index.starts[-1])
            guess = (start, min(self._layout.size, start + self._layout.last_guess(index)))
            out, pieces = self._load_blocks(index, wanted[:-1], also=guess)
            held = max(
                (d[start - a :] for a, d in pieces if a <= start < a + len(d)),
                key=len,
                default=b"",
            )
        index, block = self._layout.walk_last(held)
        if block is not None:  # the walk read all of it (kept even past the bound)
            out[last] = block
            return out
        out.update(self._load_blocks(index, wanted[-1:])[0])
        return out

    def _load_blocks(
        self, index: FrameIndex, wanted: np.ndarray, also: tuple[int, int] | None = None
    ) -> tuple[dict[int, tuple[int, bytes]], list[tuple[int, bytes]]]:
        """The blocks of ``wanted`` (sorted, distinct, every end known), in one round.

        ``also`` is one more range to fetch in the same round, unless the first
        request or a fetched range holds it. Returns the blocks and the
        ``(offset, bytes)`` pieces fetched. Blocks another thread is fetching are
        waited for, not fetched again (:class:`~hdfsspec.cache.blocks.InFlight`).
        """
        out, missing = split_held(index, wanted, self._layout.parsed.prefix, self.blocks)
        self._requests.hit("frames", len(out))
        mine, others = self._in_flight.claim(missing)
        try:
            pieces = self._fetch_blocks(index, mine, also, out)
        finally:
            self._in_flight.release(mine)
        if others:
            for event in others:
                event.wait()
            late = []
            for f in missing:
                if f in out:
                    continue
                block = self._block(f, *block_range(index, f))
                if block is None:
                    late.append(f)
                else:
                    out[f] = block
            found = len(missing) - len(mine) - len(late)
            self._requests.hit("frames", found)
            if late:  # their fetch failed, or the blocks were evicted since: fetch them
                out.update(self._load_blocks(index, np.asarray(late, dtype=np.int64))[0])
        return out, pieces

    def _known_block_range(self, frame: int) -> tuple[int, int] | None:
        """:func:`~hdfsspec.io.planning.block_range` of ``frame`` in the index as known now
        (no request, no walk), or None where its place or its end is not known yet."""
        index = self._layout.known()
        if index is None or frame >= index.number_of_frames:
            return None
        return None if int(index.stops[frame]) == UNKNOWN else block_range(index, frame)

    def _held_alone(self, frame: int) -> tuple[int, bytes] | None:
        """The block of ``frame`` if held and its place is known, without planning."""
        span = self._known_block_range(frame)
        return None if span is None else self._block(frame, *span)

    def _block(self, frame: int, start: int, stop: int) -> tuple[int, bytes] | None:
        """The block held of ``frame``, if it spans ``[start, stop)``: one kept under a
        persisted index that another thread has dropped since may not."""
        block = self.blocks.get(frame)
        if block is None or block[0] != start or len(block[1]) < stop - start:
            return None
        return block

    def _fetch_blocks(
        self,
        index: FrameIndex,
        frames: list[int],
        also: tuple[int, int] | None,
        out: dict[int, tuple[int, bytes]],
    ) -> list[tuple[int, bytes]]:
        """Fetch the blocks of ``frames`` (and ``also``) in one round into ``out``."""
        prefix = self._layout.parsed.prefix
        held = len(prefix)
        ranges = self._plan(index, frames).ranges if frames else []
        asked = list(ranges)
        if (
            also is not None
            and also[0] >= held
            and not any(a <= also[0] and also[1] <= b for a, b in ranges)
        ):
            asked.append(also)
        if not asked:
            return []
        datas = self._requests.get(asked, "frames")
        fetched = [(a, data) for (a, _), data in zip(asked, datas, strict=True)]
        pieces, fetched = fetched, fetched[: len(ranges)]
        if not frames:
            return pieces
        bases = [a for a, _ in fetched]
        self._keep_extra(index, fetched, set(frames))
        chosen = np.asarray(frames, dtype=np.int64)
        m_starts, m_stops = block_ranges(index, chosen)
        lows = np.maximum(m_starts, held)
        which = np.searchsorted(np.asarray(bases, dtype=np.int64), lows, side="right") - 1
        blocks = []
        for f, s, e, lo, k in zip(
            frames,
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
        self.blocks.put(blocks)
        return pieces

    def _plan(self, index: FrameIndex, frames: Iterable[int]) -> FetchPlan:
        return plan_frames(
            index,
            frames,
            max_gap=self.options.max_gap,
            max_block=self.options.max_block,
            held_below=len(self._layout.parsed.prefix),
            link=self._requests.link.estimate,
            whole_below=self.options.max_cache_bytes // 2,
        )

    def _keep_extra(
        self, index: FrameIndex, fetched: list[tuple[int, bytes]], skip: set[int]
    ) -> None:
        """Remember the frames that bridged gaps or a whole read brought in for free."""
        starts = index.starts
        if index.number_of_frames and int(index.stops[-1]) == UNKNOWN:
            starts = starts[:-1]  # the end of the last frame is not known yet
        held = len(self._layout.parsed.prefix)
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
        self.blocks.put(blocks)  # one LRU update, not one per frame

    def prefetch(self, frames: Iterable[int]) -> None:
        """Fetch the blocks of ``frames`` (0-based) into the cache in one round.

        Their reads that follow are not taken for an access pattern.
        """
        wanted = frame_numbers(frames)
        planned = self._planned()
        if len(planned) > 1_000_000:  # frames prefetched and never read
            planned.clear()
        planned.update(wanted)
        self._layout.from_object(lambda: self.load(wanted))

    def frame_payload(self, frame: int, block: tuple[int, bytes]) -> bytes:
        """Return the encoded frame: its fragment values joined, or its native bytes."""
        index = self._layout.view(frames=frame + 1)
        layout = self._layout
        return frame_payload(index, frame, block, path=layout.path, size=layout.size, tiles=False)

    def read_frames(self, frames: Sequence[int], follow: bool = True) -> list[bytes]:
        """Return the encoded bytes of ``frames`` (0-based), fetched in one round.

        With ``follow``, the read counts in the access pattern: frames ahead of a
        sequential or strided reader are fetched with it, or in the background.
        """
        wanted = frame_numbers(frames)
        return self._layout.from_object(lambda: self._read_frames(wanted, follow))

    def _read_frames(self, frames: list[int], follow: bool = True) -> list[bytes]:
        if len(frames) == 1:
            return [self._read_one(frames[0], follow)]
        self.check_range(np.asarray(frames, dtype=np.int64))
        if not frames:
            return []
        follow = follow and self._unplanned(frames)
        ahead = self.follow(min(frames), max(frames)) if follow else []
        blocks = self.load_with(frames, ahead)
        index = self._layout.view(frames=max(frames) + 1)
        layout = self._layout
        return frames_payloads(index, frames, blocks, path=layout.path, size=layout.size)

    def _read_one(self, frame: int, follow: bool) -> bytes:
        """:meth:`_read_frames` of one frame (a loop's call): the same steps, no arrays."""
        pixels, total = self._said.said()
        if not pixels or not 0 <= frame < total:
            self.check_range(np.asarray([frame], dtype=np.int64))  # raises
        ahead = self.follow(frame, frame) if follow and self._unplanned([frame]) else []
        block = None if ahead else self._held_alone(frame)
        if block is None:
            block = self.load_with([frame], ahead)[frame]
        else:
            self._requests.hit("frames")
        index = self._layout.view(frames=frame + 1)
        layout = self._layout
        return frame_payload(index, frame, block, path=layout.path, size=layout.size)

    def plan(self, frames: Iterable[int]) -> FetchPlan:
        """Dry run: the :class:`~hdfsspec.io.planning.FetchPlan` of reading ``frames`` now.

        No frame is fetched and the items are never walked: frames whose place only a
        walk would tell are the plan's ``unknown`` (see
        :func:`~hdfsspec.cache.dry_run.dry_run`, which says which tables it may read).
        """
        chosen = [int(f) for f in distinct_frames(frame_numbers(frames))]
        self.check_range(np.asarray(chosen, dtype=np.int64))
        return dry_run(self._layout, self.blocks, self._plan, chosen)

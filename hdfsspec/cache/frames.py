"""Frame blocks: the frames of an object, fetched in one coalesced round, kept in an LRU.

:class:`FrameCache` is the middle layer of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`:
on top of what :class:`~hdfsspec.cache.layout.LayoutCache` learns (the header, the frame
index), it serves frames. A frame's block is the exact byte range of its items plus
the next item's 8-byte header (which highdicom reads); the blocks of the frames a
call needs and does not hold are planned (:func:`~hdfsspec.io.planning.plan_frames`:
gaps worth bridging, one whole read when most of the object is wanted) and fetched
in one round; frames a bridged gap brought in are kept too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from hdfsspec.cache.layout import LayoutCache
from hdfsspec.cache.persist_entry import CONTRADICTED
from hdfsspec.dicom.fragment_items import check_next_item, join_fragments
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.dicom.parse import number_of_frames
from hdfsspec.errors import FrameIndexError
from hdfsspec.io.planning import (
    FetchPlan,
    block_range,
    block_ranges,
    distinct_frames,
    frame_numbers,
    plan_frames,
)

__all__ = ["FrameCache"]

_PIXEL_TAG = 0x7FE00010
_T = TypeVar("_T")


class FrameCache(LayoutCache):
    """The part of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache` that serves frames.

    Parameters are those of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`.
    """

    # -- frame blocks -------------------------------------------------------------------
    def check_range(self, wanted: np.ndarray) -> None:
        """Raise IndexError unless every frame of ``wanted`` is one of the object's.

        A data set that says it has frames (Number of Frames) but holds no Pixel Data
        raises :class:`~hdfsspec.errors.FrameIndexError` for them instead.

        The number of frames comes from the header, not from the index: without an
        offset table the index may hold only the frames found so far, and numpy would
        read a negative number as one of those.
        """
        if not wanted.size:
            return
        parsed = self.parsed
        pixels = parsed.header.pixel_data_offset is not None
        said = pixels or "NumberOfFrames" in parsed.dataset  # 1 when absent, with pixels
        total = number_of_frames(parsed) if said else 0
        lo, hi = int(wanted.min()), int(wanted.max())
        if lo < 0 or hi >= total:
            raise IndexError(f"frame {lo if lo < 0 else hi} out of range (0..{total - 1})")
        if not pixels:
            raise FrameIndexError(
                f"frame {lo}: the data set says Number of Frames is {total} but has no "
                "Pixel Data element (the object may be cut short before its pixels)",
                path=self.path,
                offset=self.size,
                tag=_PIXEL_TAG,
            )

    def _load(self, frames: Iterable[int]) -> dict[int, tuple[int, bytes]]:
        """Return the blocks of ``frames``, fetching the missing ones in one round."""
        wanted = distinct_frames(frames)
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
        ``(offset, bytes)`` pieces fetched. Blocks another thread is fetching are
        waited for, not fetched again (:class:`~hdfsspec.cache.blocks.InFlight`).
        """
        held = len(self.parsed.prefix)
        starts, stops = block_ranges(index, wanted)
        out: dict[int, tuple[int, bytes]] = {}
        missing: list[int] = []
        for f, start, stop in zip(wanted.tolist(), starts.tolist(), stops.tolist(), strict=True):
            block = (0, self.parsed.prefix) if stop <= held else self._block(f, start, stop)
            if block is None:
                missing.append(f)
            else:
                out[f] = block
        self.hit_count += len(out)
        self.stats.hit("frames", len(out))
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
            self.hit_count += found
            self.stats.hit("frames", found)
            if late:  # their fetch failed, or the blocks were evicted since: fetch them
                out.update(self._load_blocks(index, np.asarray(late, dtype=np.int64))[0])
        return out, pieces

    def _block(self, frame: int, start: int, stop: int) -> tuple[int, bytes] | None:
        """The block held of ``frame``, if it spans ``[start, stop)``: one kept under a
        persisted index that another thread has dropped since may not."""
        block = self._blocks.get(frame)
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
        prefix = self.parsed.prefix
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
        datas = self._get(asked, "frames")
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
        self._blocks.put(blocks)
        return pieces

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
        wanted = frame_numbers(frames)
        self._from_object(lambda: self._load(wanted))

    def _from_object(self, call: Callable[[], _T]) -> _T:
        """``call()``; again, on the layout learnt from the object, if a persisted index
        failed in it (no item where it puts one): the entry goes, the next open rebuilds.

        Also again, whatever it returned or raised, if another thread dropped the
        persisted index meanwhile: the call may have mixed the two layouts.
        """
        generation = self._generation
        try:
            out = call()
        except Exception as exc:
            changed = generation != self._generation
            if not (changed or isinstance(exc, CONTRADICTED)) or not self._drop_entry(generation):
                raise
            return call()
        return out if generation == self._generation else call()

    def frame_payload(self, frame: int, block: tuple[int, bytes]) -> bytes:
        """Return the encoded frame: its fragment values joined, or its native bytes."""
        index = self.view(frames=frame + 1)
        start, stop = index.frame_range(frame)
        base, data = block
        if not index.encapsulated:
            return data[start - base : stop - base]
        padded_odd = index.offset_table == "eot"
        return join_fragments(
            data,
            base,
            start,
            stop,
            frame=frame,
            path=self.path,
            padded_odd=padded_odd,
            size=self.size,
        )

    def read_frames(self, frames: Sequence[int]) -> list[bytes]:
        """Return the encoded bytes of ``frames`` (0-based), fetched in one round."""
        wanted = frame_numbers(frames)
        return self._from_object(lambda: self._read_frames(wanted))

    def _read_frames(self, frames: list[int]) -> list[bytes]:
        blocks = self._load(frames)
        if not frames:
            return []
        index = self.view(frames=max(frames) + 1)
        if not index.encapsulated:
            return [self.frame_payload(f, blocks[f]) for f in frames]
        chosen = np.asarray(frames, dtype=np.int64)
        starts, stops = index.starts[chosen].tolist(), index.stops[chosen].tolist()
        path, single = self.path, index.offset_table == "tiff"  # a tile is one item
        odd = index.offset_table == "eot"
        out = []
        for f, start, stop in zip(frames, starts, stops, strict=True):
            base, data = blocks[f]
            out.append(
                join_fragments(
                    data,
                    base,
                    start,
                    stop,
                    frame=f,
                    path=path,
                    single=single,
                    padded_odd=odd,
                    size=self.size,
                )
            )
            if single and f + 1 < index.number_of_frames:  # the next tile's item, held too
                a, b = int(index.starts[f + 1]), int(index.stops[f + 1])
                if b != UNKNOWN:
                    check_next_item(data, base, a, b - a - 8, frame=f, path=path)
        return out

    def plan(self, frames: Iterable[int]) -> FetchPlan:
        """Dry run: the :class:`~hdfsspec.io.planning.FetchPlan` of reading ``frames`` now.

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

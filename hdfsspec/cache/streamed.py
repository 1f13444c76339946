"""Frame blocks cut from a streamed fetch as its bytes come in.

A window of frames fetched ahead of a reader is one ranged GET of a few MB. Fetched
whole, the reader of its first frame waits for its last byte. :class:`StreamedBlocks`
takes the bytes of a :meth:`~hdfsspec.cache.requests.Requests.stream` as they arrive
(in the event loop's thread), cuts each frame's block out of them once its last byte
is in, keeps it in the frame blocks and wakes whoever waits for that frame (its claim
in :class:`~hdfsspec.cache.blocks.InFlight`, one event per frame). Frames a bridged gap
brings in are kept too, as a whole fetch keeps them. When the stream ends, every
claim still held is released: a frame not cut by then (the rest of a failed stream
could not be read) is fetched by the reader that needs it, which meets the error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from hdfsspec.cache.blocks import FrameBlocks, InFlight
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.io.planning import block_ranges

__all__ = ["StreamedBlocks"]

_TRIM = 1024 * 1024
"""Bytes of a range's buffer already cut into blocks before they are dropped from it."""


class StreamedBlocks:
    """Cut the blocks of frames out of the streamed bytes of their ranges.

    Parameters
    ----------
    index : FrameIndex
        Where the frames are (every block within the ranges has a known end).
    ranges : list of (int, int)
        The ranges streamed (sorted, distinct), each starting at or after ``held``.
    mine : iterable of int
        The frames claimed for this stream (released as they are cut, the rest at the end).
    prefix : bytes
        The first bytes of the object: the head of a block that starts in them.
    blocks : FrameBlocks
        Where the blocks are kept.
    in_flight : InFlight
        The claims of ``mine`` (made with ``each=True``).
    """

    def __init__(
        self,
        index: FrameIndex,
        ranges: list[tuple[int, int]],
        mine: Iterable[int],
        prefix: bytes,
        blocks: FrameBlocks,
        in_flight: InFlight,
    ) -> None:
        self._prefix, self._blocks, self._in_flight = prefix, blocks, in_flight
        self._claimed = set(mine)
        self._lock = threading.Lock()  # the rest of a failed range is fed from another thread
        self._todo = [_frames_in(index, a, b, len(prefix), self._claimed) for a, b in ranges]
        # per range: the lowest block start of the frames from n on (what the buffer must keep)
        self._keep = [_suffix_min([s for _, s, _ in todo]) for todo in self._todo]
        self._next = [0] * len(ranges)  # per range: the first frame of _todo not cut yet
        self._base = [a for a, _ in ranges]  # per range: the offset of its buffer's first byte
        self._buffers = [bytearray() for _ in ranges]

    def feed(self, k: int, offset: int, chunk: bytes) -> None:
        """The bytes of range ``k`` from ``offset`` on: keep the blocks they complete."""
        with self._lock:
            buffer, base = self._buffers[k], self._base[k]
            if offset != base + len(buffer):  # bytes out of order: never from one stream
                raise ValueError(f"streamed bytes at {offset}, expected {base + len(buffer)}")
            buffer += chunk
            end = offset + len(chunk)
            todo, n = self._todo[k], self._next[k]
            cut: list[tuple[int, tuple[int, bytes]]] = []
            with memoryview(buffer) as view:  # released before the buffer is trimmed
                while n < len(todo) and todo[n][2] <= end:
                    frame, start, stop = todo[n]
                    head = self._prefix[start:base] if start < base else b""
                    body = bytes(view[max(start, base) - base : stop - base])  # one copy
                    cut.append((frame, (start, head + body)))
                    n += 1
            self._next[k] = n
            if cut:
                keep_from = self._keep[k][n] if n < len(todo) else end
                if keep_from - base >= _TRIM:  # drop what no block to come needs
                    del buffer[: keep_from - base]
                    self._base[k] = keep_from
        if cut:
            self._blocks.put(cut)
            self._release([f for f, _ in cut])

    def done(self, error: BaseException | None = None) -> None:
        """The stream ended: release every claim left (their readers fetch them)."""
        with self._lock:
            self._buffers = [bytearray() for _ in self._buffers]
        self._release(list(self._claimed))

    def _release(self, frames: list[int]) -> None:
        """Release the claims of ``frames`` held by this stream (once each: a frame cut
        and evicted may be claimed again by another thread, whose claim is not ours)."""
        with self._lock:
            ours = [f for f in frames if f in self._claimed]
            self._claimed.difference_update(ours)
        if ours:
            self._in_flight.release(ours)


def _frames_in(
    index: FrameIndex, start: int, stop: int, held: int, claimed: set[int]
) -> list[tuple[int, int, int]]:
    """``(frame, block start, block stop)`` of the frames whose blocks a range
    ``[start, stop)`` completes, by block stop: those within it, and those claimed whose
    block starts in the first ``held`` bytes (their head is there) and ends in it."""
    starts = index.starts
    if index.number_of_frames and int(index.stops[-1]) == UNKNOWN:
        starts = starts[:-1]  # the end of the last frame is not known: no block of it
    first = int(np.searchsorted(starts, start, side="left"))
    if first > 0 and start <= held:  # the frame before may start in the first bytes
        first -= 1
    last = int(np.searchsorted(starts, stop, side="left"))
    if last <= first:
        return []
    frames = np.arange(first, last, dtype=np.int64)
    b_starts, b_stops = block_ranges(index, frames)
    out = []
    for f, s, e in zip(frames.tolist(), b_starts.tolist(), b_stops.tolist(), strict=True):
        inside = start <= s
        across = s < start and start <= held and f in claimed
        if (inside or across) and s < e <= stop:
            out.append((f, s, e))
    out.sort(key=lambda item: item[2])
    return out


def _suffix_min(values: list[int]) -> list[int]:
    """``out[n] = min(values[n:])``."""
    out = list(values)
    for n in range(len(out) - 2, -1, -1):
        out[n] = min(out[n], out[n + 1])
    return out

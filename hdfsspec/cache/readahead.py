"""Readahead in frames: follow the way a caller walks the frames, and fetch ahead of it.

A caller that reads one frame at a time (``get_raw_frame`` in a loop, ``pydicom``'s
small reads of the Pixel Data, a ``read()`` loop) would pay one round trip per frame.
:class:`FramePattern` watches the frames each read touches and predicts the next ones:

* **forward**: each read starts within or just after the frames of the one before
  (one by one, or reads of any size that cut across frames): the next frames follow
  the last one read;
* **strided**: the reads move by the same step twice in a row (every k-th frame, or a
  row of tiles at a time): the next reads are the same frames, a step further on.

Once a pattern holds, the frames ahead are handed out in windows that grow
geometrically (from an eighth of the cap, times four each time) up to a cap the caller
sets from the link and the cache bound; the next window is handed out when the reader
enters the one before the last, so two stay in flight ahead of it (large ones fetched
in up to :data:`PARTS` parts at once). Any other
read (random access) ends the pattern: nothing more is fetched ahead until a new one
holds. :class:`FramePattern` is pure (no I/O) and thread-safe; :class:`ReadAhead`
fetches what it hands out, in the reader's round when the reader waits anyway, else in
a background thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from hdfsspec._fork import renew_after_fork
from hdfsspec.dicom.index import UNKNOWN, FrameIndex

__all__ = ["FramePattern", "ReadAhead", "frame_bytes"]

GROWTH = 4
"""Each window ahead is this many times the one before, up to the cap."""
PARTS = 4
"""A window ahead is fetched in up to this many parts at once, ..."""
PART_BYTES = 8 * 1024 * 1024
"""... of at least this many bytes each (a request costs a round trip's overhead; one
stream carries a few MB per round trip)."""
MIN_RUN = 4
"""Forward steps (or equal jumps) in a row before frames are fetched ahead of a reader:
the tiles of a small region read one by one, with the item header after each row
(highdicom's reader over a 3 x 3 region: 3 steps a row), fetch nothing ahead."""


class FramePattern:
    """The access pattern of one object's frames, and the frames to fetch ahead of it.

    Reads are grouped in *runs*: reads each starting within or just after the frames
    of the one before. A run of :data:`MIN_RUN` forward steps is a forward reader; a
    jump ends a run, and :data:`MIN_RUN` jumps in a row by the same step after runs of
    the same width make a strided reader (every k-th frame, or the tiles of a region row by
    row, whether each row is one read or one read a tile).

    Parameters
    ----------
    total : int
        Number of frames of the object (nothing is predicted beyond it).
    frame_bytes : callable
        ``frame_bytes(first, last)``: the bytes of frames ``first..last`` (an
        estimate where their sizes are not known yet).
    cap : int
        Largest window ahead, in bytes.
    held : callable, optional
        ``held(frame)``: whether the cache holds ``frame`` already (the first request's
        bytes): a window ahead starts after the frames held (none by default).
    """

    def __init__(
        self,
        total: int,
        frame_bytes: Callable[[int, int], int],
        cap: int,
        held: Callable[[int], bool] | None = None,
    ) -> None:
        self.total, self._frame_bytes, self.cap = total, frame_bytes, max(1, cap)
        self._held = held or (lambda frame: False)
        self._lock = threading.Lock()
        self._prev: tuple[int, int] | None = None
        self._run_start = 0  # first frame of the current run
        self._run_steps = 0  # forward steps in it
        self._row: tuple[int, int] | None = None  # (step, width) of the last jump
        self._jumps = 0  # jumps in a row by that step, after runs of that width
        self._reset()

    def _reset(self) -> None:
        self.step = 0  # frames between the starts of successive rows, when strided
        self.width = 0  # frames of each row, when strided
        self.window = 0  # bytes of the last window handed out
        self.scheduled = -1  # the furthest frame (forward) or row start (strided) handed out
        self.trigger = -1  # a read reaching this frame gets the next window
        self._newest = -1  # first frame (or row) of the window handed out last

    def observe(self, first: int, last: int) -> list[int]:
        """A read touched frames ``first..last``: the frames to fetch ahead now (often none)."""
        with self._lock:
            prev, self._prev = self._prev, (first, last)
            if prev is None:
                self._run_start = first
                return []
            if prev == (first, last):
                return []  # more small reads of the same frames
            p_first, p_last = prev
            if p_first <= first <= p_last + 1 and last >= p_last:  # forward, within a run
                self._run_steps += 1
                if self.step:  # strided: the frames of the rows come with them
                    if last - self._run_start < self.width:
                        return self._strided(self._run_start) if first == self._run_start else []
                    self._reset()  # a row longer than the rows before: no longer strided
                if self._run_steps < MIN_RUN:
                    return []
                return self._forward(first, last)
            return self._jump(first, p_last)

    def _jump(self, first: int, p_last: int) -> list[int]:
        """A read away from the run: a new run; strided if the step and width repeat."""
        row = (first - self._run_start, p_last - self._run_start + 1)
        self._jumps = self._jumps + 1 if row == self._row and row[0] > 0 else 1
        self._row, self._run_start, self._run_steps = row, first, 0
        if self._jumps < MIN_RUN:
            self._reset()
            return []
        if (self.step, self.width) != row:
            self._reset()
            self.step, self.width = row
        return self._strided(first)

    def _handed(self, start: int) -> None:
        """A window starting at ``start`` is handed out: the next one goes when the reader
        enters the window before it, so two stay in flight ahead of the reader."""
        self.trigger = self._newest if self._newest >= 0 else start
        self._newest = start

    def _grow(self, nbytes: int) -> int:
        """The next window: the first twice the read, and at least an eighth of the cap
        (a pattern that held for :data:`MIN_RUN` reads is worth that much); then
        :data:`GROWTH` times the one before; never more than the cap."""
        if self.window:
            grown = max(2 * nbytes, GROWTH * self.window)
        else:
            grown = max(2 * nbytes, self.cap // 8)
        self.window = min(self.cap, max(1, grown))
        return self.window

    def _forward(self, first: int, last: int) -> list[int]:
        if last < self.trigger:
            return []  # the window handed out last is not reached yet
        start = max(last + 1, self.scheduled + 1)
        while start < self.total and self._held(start):  # e.g. in the first request's bytes
            start += 1
        self.scheduled = start - 1  # the frames held are not looked at again by the next reads
        if start >= self.total:
            return []
        budget = self._grow(self._frame_bytes(first, last))
        stop = self._fit(start, budget)  # frames start..stop-1 fit the window
        if stop < self.total and self._frame_bytes(stop, self.total - 1) <= budget // 4:
            stop = self.total  # no window of a few last frames on its own: a round for little
        self._handed(start)
        self.scheduled = stop - 1
        return list(range(start, stop))

    def _fit(self, start: int, budget: int) -> int:
        """The first frame after ``start`` that no longer fits a window of ``budget``
        bytes from ``start`` (the window holds at least ``start``): found by doubling
        steps then halving them, the sizes growing with the frames."""

        def fits(stop: int) -> bool:
            return stop < self.total and self._frame_bytes(start, stop) <= budget

        low, step = start + 1, 1  # low fits, or is the answer
        if not fits(low):
            return low
        high = low + step
        while fits(high):
            low, step = high, 2 * step
            high = low + step
        while high - low > 1:  # low fits, high does not
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return high

    def _strided(self, row: int) -> list[int]:
        """Rows ahead of the row starting at ``row``, once the reader enters the last
        batch handed out."""
        if row < self.trigger:
            return []
        step, width = self.step, self.width
        a = row + step if self.scheduled < row else self.scheduled + step
        budget = self._grow(self._frame_bytes(row, min(self.total - 1, row + width - 1)))
        out: list[int] = []
        starts: list[int] = []
        nbytes = 0
        while a < self.total:
            b = min(self.total - 1, a + width - 1)
            nbytes += self._frame_bytes(a, b)
            if out and nbytes > budget:
                break
            out.extend(range(a, b + 1))
            starts.append(a)
            a += step
        if starts:
            self._handed(starts[0])
            self.scheduled = starts[-1]
        return out


def frame_bytes(known: Callable[[], FrameIndex | None], first: int, last: int) -> int:
    """Bytes of frames ``first..last``: from the index as ``known()`` now, else estimated
    (the mean frame of the frames known, or 64 KiB)."""
    index = known()
    count = last - first + 1
    if index is None or index.number_of_frames == 0:
        return count * 64 * 1024
    n = index.number_of_frames
    if last < n and int(index.stops[last]) != UNKNOWN:
        return int(index.stops[last]) - int(index.starts[first])
    if n > 1:
        return count * max(1, (int(index.starts[-1]) - int(index.starts[0])) // (n - 1))
    stop = int(index.stops[0])
    return count * (stop - int(index.starts[0]) if stop != UNKNOWN else 64 * 1024)


def _split(frames: list[int], count: int) -> list[list[int]]:
    """``frames`` in ``count`` runs of about the same length, in order."""
    size = -(-len(frames) // count)
    return [frames[k : k + size] for k in range(0, len(frames), size)]


class ReadAhead:
    """Fetch the frames a :class:`FramePattern` predicts, in the background.

    Parameters
    ----------
    pattern : callable
        Returns the :class:`FramePattern` of the object (made once its number of
        frames is known).
    load : callable
        ``load(frames)`` fetches the blocks of ``frames`` into the cache (one round).
    held : callable
        ``held(frame)``: whether the cache holds the block of ``frame``.
    start : callable, optional
        ``start(frames)`` starts a fetch of ``frames`` that needs no thread (a stream,
        its frames claimed at once: a reader that gets there first waits for them) and
        returns the frames it left to :func:`load`, or None where it cannot.
    """

    def __init__(
        self,
        pattern: Callable[[], FramePattern],
        load: Callable[[list[int]], object],
        held: Callable[[int], bool],
        start: Callable[[list[int]], list[int] | None] | None = None,
    ) -> None:
        self._pattern, self._load, self._held = pattern, load, held
        self._start = start or (lambda frames: None)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        """In a forked child: no thread of the parent's pool runs here."""
        self._pool, self._lock = None, threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_pool", "_lock")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._after_fork()
        renew_after_fork(self)

    def follow(self, first: int, last: int) -> list[int]:
        """A read needs frames ``first..last``: the frames ahead to fetch *with* them.

        When the read's frames are held, or were handed out ahead before (they are
        coming, or came), the frames ahead (if any) are fetched in the background
        instead and none are returned.
        """
        pattern = self._pattern()
        coming = pattern.scheduled
        ahead = pattern.observe(first, last)
        if not ahead:
            return []
        # a window is fetched in parts at once: one stream is often slower than the link
        parts = _split(ahead, max(1, min(PARTS, pattern.window // PART_BYTES)))
        handed = (first if pattern.step else last) <= coming  # a read of a window ahead
        if handed or all(self._held(f) for f in range(first, last + 1)):
            self._submit(parts)
            return []
        self._submit(parts[1:])
        return parts[0]  # with the read: it waits for its round anyway

    def later(self, frames: list[int]) -> None:
        """Fetch in the background frames :meth:`follow` gave to fetch with a read that
        turned out to need no request."""
        if frames:
            self._submit([frames])

    def _submit(self, parts: list[list[int]]) -> None:
        parts = [left for frames in parts if (left := self._started(frames))]
        if not parts:
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PARTS, thread_name_prefix="hdfsspec-readahead")
            for frames in parts:
                self._pool.submit(self._quietly, frames)

    def _started(self, frames: list[int]) -> list[int]:
        """Start ``frames`` without a thread where possible; return what is left to load."""
        try:
            left = self._start(frames)
        except Exception:  # the load in a thread meets it again, and leaves it to the reader
            return frames
        return frames if left is None else left

    def _quietly(self, frames: list[int]) -> None:
        """Fetch ``frames`` into the cache (nothing held here: the blocks are the cache's);
        a failure is left to the read that needs them to meet again."""
        try:
            self._load(frames)
        except Exception:  # the reader that needs them fetches them, and meets it itself
            return

    def close(self) -> None:
        """Cancel the windows not started; those in flight end on their own."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

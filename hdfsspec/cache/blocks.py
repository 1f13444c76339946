"""Frame blocks in an LRU bounded in bytes: what the frame-aware cache holds of the frames.

A block is ``(start, bytes)``: the absolute offset of a frame's first byte and the
bytes of its items (plus the next item's header, see :mod:`hdfsspec.io.planning`).
Pure: no I/O. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from itertools import repeat

import numpy as np

from hdfsspec._fork import held_elsewhere, renew_after_fork
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.io.planning import block_ranges

__all__ = ["Block", "FrameBlocks", "InFlight", "split_held"]

Block = tuple[int, bytes]
"""``(start, bytes)`` of one frame."""


class FrameBlocks:
    """Blocks by frame number, least recently used first out, at most ``bound`` bytes.

    Parameters
    ----------
    bound : int
        Largest sum of the lengths of the blocks held; a block larger than it is
        not kept.

    Notes
    -----
    What the cache holds outside its blocks counts against the same bound: a walk's
    windows and the rounds it keeps, batches fetched ahead for a sequential reader.
    Their owners :meth:`reserve` those bytes (blocks are evicted to make room) and
    :meth:`release` them when done, so that blocks and the rest together stay
    within ``bound``.
    """

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.nbytes = 0
        self.reserved = 0
        self._items: OrderedDict[int, Block] = OrderedDict()
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        """In a forked child: a new lock; no blocks if a thread was changing them."""
        if held_elsewhere(self._lock):  # by a thread of the parent: the LRU may be torn
            self._items, self.nbytes = OrderedDict(), 0
            self._lock = threading.Lock()

    def get(self, frame: int) -> Block | None:
        """The block of ``frame`` (now the most recently used), or None."""
        with self._lock:
            block = self._items.get(frame)
            if block is not None:
                self._items.move_to_end(frame)
            return block

    def get_many(self, frames: list[int]) -> list[Block | None]:
        """The blocks of ``frames`` (None where not held), under one lock (see :meth:`get`)."""
        with self._lock:
            items = self._items
            out = [items.get(f) for f in frames]
            for f, block in zip(frames, out, strict=True):
                if block is not None:
                    items.move_to_end(f)
            return out

    def __contains__(self, frame: object) -> bool:
        return frame in self._items

    def holding(self, frames: np.ndarray) -> np.ndarray:
        """Whether each of ``frames`` has a block here (a boolean array)."""
        with self._lock:
            held = np.fromiter(self._items, dtype=np.int64, count=len(self._items))
        return np.isin(frames, held)

    def values(self) -> list[Block]:
        """The blocks held, least recently used first."""
        with self._lock:
            return list(self._items.values())

    def put(self, blocks: Iterable[tuple[int, Block]]) -> None:
        """Hold ``(frame, block)`` pairs (most recent last), evicting beyond the bound."""
        pairs = blocks if isinstance(blocks, list) else list(blocks)
        if not pairs:
            return
        sizes = [len(data) for _, (_, data) in pairs]
        with self._lock:
            items = self._items
            if max(sizes) <= self.bound and items.keys().isdisjoint(f for f, _ in pairs):
                items.update(pairs)  # new frames, each within the bound: at once
                self.nbytes += sum(sizes)
                self._evict()
                return
            for frame, block in pairs:
                old = items.pop(frame, None)
                if old is not None:
                    self.nbytes -= len(old[1])
                if len(block[1]) > self.bound:
                    continue
                items[frame] = block
                self.nbytes += len(block[1])
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used blocks until blocks and reservations fit."""
        items, room = self._items, max(0, self.bound - self.reserved)
        while self.nbytes > room and items:
            _, (_, evicted) = items.popitem(last=False)
            self.nbytes -= len(evicted)

    def reserve(self, nbytes: int) -> None:
        """Count ``nbytes`` held elsewhere against the bound (blocks are evicted for them)."""
        with self._lock:
            self.reserved += max(0, nbytes)
            self._evict()

    def release(self, nbytes: int) -> None:
        """Stop counting ``nbytes`` reserved before."""
        with self._lock:
            self.reserved = max(0, self.reserved - max(0, nbytes))

    def clear(self) -> None:
        """Drop every block."""
        with self._lock:
            self._items.clear()
            self.nbytes = 0


class _Guard:
    """The lock that lets one :meth:`Done.set` of several release a waiter's lock (a new
    one in a forked child: a parent's thread may have held it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        self.lock = threading.Lock()


_SETTING = _Guard()


class Done:
    """Set once, waited for by any number of threads: a lock held until :meth:`set`.

    What :class:`InFlight` hands out, one per frame of a streamed window: a
    ``threading.Event`` (a condition, a lock and a list of waiters) costs several
    times as much to make and to set.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        """Wake every thread waiting, and those to come (the first call only)."""
        with _SETTING.lock:
            if self._set:
                return
            self._set = True
        self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self) -> None:
        """Return once :meth:`set` was called."""
        if not self._set:
            self._lock.acquire()  # released by set(): pass it on to the next waiter
            self._lock.release()


class InFlight:
    """The frames some thread is fetching now: another thread that needs them waits.

    Two threads reading overlapping frames at once (regions of one slide from a
    thread pool) would otherwise both fetch the frames they share. A thread
    :meth:`claim` s the frames it will fetch, fetches them, :meth:`release` s them,
    and only then waits for those others had claimed: no thread waits while holding
    a claim, so none waits for ever.
    """

    def __init__(self) -> None:
        self._events: dict[int, Done] = {}
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        """In a forked child: no fetch of the parent's threads will end here."""
        self._events = {}
        self._lock = threading.Lock()

    def claim(self, frames: Iterable[int], each: bool = False) -> tuple[list[int], list[Done]]:
        """Claim those of ``frames`` nobody fetches; return them, and what to wait for.

        The frames claimed share one event (set when any of them is released: a fetch
        that ends whole), or with ``each`` have one each (a streamed fetch releases
        each frame as its bytes come in).
        """
        mine: list[int] = []
        theirs: dict[int, Done] = {}
        ours: Done | None = None  # one for the whole claim, set on release
        wanted = frames if isinstance(frames, list) else list(frames)
        with self._lock:
            events = self._events
            if not each and wanted and events.keys().isdisjoint(wanted):
                events.update(dict.fromkeys(wanted, Done()))  # nobody else's
                return list(dict.fromkeys(wanted)), []
            for frame in wanted:
                event = events.get(frame)
                if event is None:
                    if ours is None or each:  # not made when every frame was cached
                        ours = Done()
                    events[frame] = ours
                    mine.append(frame)
                elif id(event) not in theirs:
                    theirs[id(event)] = event
        return mine, list(theirs.values())

    def release(self, frames: Iterable[int]) -> None:
        """The fetch of ``frames`` is over (done or failed): wake whoever waits."""
        with self._lock:
            pop = self._events.pop
            done = set(map(pop, frames, repeat(None)))  # events hash by identity
        for event in done:
            if event is not None:
                event.set()


def split_held(
    index: FrameIndex, wanted: np.ndarray, prefix: bytes, blocks: FrameBlocks
) -> tuple[dict[int, Block], list[int]]:
    """The blocks held of ``wanted`` (sorted, distinct, every end known), in ``prefix``
    (the first request's bytes) or ``blocks``; and the frames missing."""
    held = len(prefix)
    starts, stops = block_ranges(index, wanted)
    out: dict[int, Block] = {}
    missing: list[int] = []
    frames = wanted.tolist()
    held_blocks = blocks.get_many(frames)  # one lock for all
    if held_blocks.count(None) == len(frames) and (not frames or int(stops.min()) > held):
        return out, frames  # none held: the usual case of a first read
    for f, start, stop, block in zip(
        frames, starts.tolist(), stops.tolist(), held_blocks, strict=True
    ):
        if stop <= held:
            out[f] = (0, prefix)
        elif block is None or block[0] != start or len(block[1]) < stop - start:
            missing.append(f)  # not held, or held under a persisted index dropped since
        else:
            out[f] = block
    return out, missing

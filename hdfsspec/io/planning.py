"""Pure fetch planning: frame numbers -> byte ranges -> a coalesced fetch plan.

The names ``max_gap`` and ``max_block`` follow fsspec's ``ReferenceFileSystem``
and :func:`fsspec.utils.merge_offset_ranges`, which does the merging when a fixed
``max_gap`` is given; otherwise the cost model of :mod:`hdfsspec.io.link` decides
which gaps to bridge and whether to read the whole Pixel Data. No I/O.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fsspec.utils import merge_offset_ranges

from hdfsspec._log import get_logger
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.io.link import LinkEstimate, cheapest_ranges

__all__ = [
    "FetchPlan",
    "block_range",
    "block_ranges",
    "coalesce",
    "distinct_frames",
    "frame_numbers",
    "pixel_span",
    "plan_frames",
    "spans",
    "touching",
]

_log = get_logger(__name__)

NEXT_ITEM_HEADER = 8
"""highdicom reads the tag of the item after a frame: frame blocks include it."""


def frame_numbers(frames: Iterable[Any]) -> list[int]:
    """``frames`` as a list of ints (numpy integers too); anything else is a TypeError.

    A float such as ``2.5`` would otherwise be truncated to a frame, or fail later as
    an unrelated error.
    """
    seq = frames if isinstance(frames, (list, tuple, np.ndarray)) else list(frames)
    if len(seq) == 1 and type(seq[0]) is int:  # a loop's one frame: no array
        return [seq[0]]
    arr = _as_array(seq)
    if arr is not None:  # ints (Python or numpy): at once
        return list(arr.tolist())
    out = []
    for f in seq:
        try:
            out.append(operator.index(f))
        except TypeError:
            raise TypeError(
                f"frame numbers must be integers, not {type(f).__name__} (frame index {f!r})"
            ) from None
    return out


def _as_array(seq: Sequence[Any] | np.ndarray) -> np.ndarray | None:
    """``seq`` as a flat int64 array when it holds integers only (None otherwise: the
    caller converts one by one, and says which is not an integer)."""
    if not len(seq):
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.asarray(seq)
    except (TypeError, ValueError):  # ragged, or not numbers
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        return None
    if arr.dtype.kind == "u" and int(arr.max()) >= 2**63:
        return None
    return arr.astype(np.int64, copy=False)


def distinct_frames(frames: Iterable[Any]) -> np.ndarray:
    """The distinct frame numbers of ``frames``, sorted, as an int64 array.

    Not ``np.unique``: numpy 2.4 (at least) asks ``np.ma`` whether its input is masked,
    which imports ``numpy.ma`` (10-80 ms) on the first frame read of a process.
    """
    seq = frames if isinstance(frames, (list, tuple, np.ndarray)) else list(frames)
    arr = _as_array(seq)
    if arr is None:
        arr = np.fromiter((int(f) for f in seq), dtype=np.int64, count=len(seq))
    a = np.sort(arr)
    if a.size > 1:
        a = a[np.concatenate(([True], a[1:] != a[:-1]))]
    return a


def block_range(index: FrameIndex, frame: int) -> tuple[int, int]:
    """Return the byte range cached for ``frame``.

    For encapsulated data this is the frame's items plus the next item's
    8-byte header (clipped to the object); for native data, the frame's bytes.
    The stop of the last frame must be known.
    """
    start, stop = index.frame_range(frame)
    if stop == UNKNOWN:
        raise ValueError(f"the end of frame {frame} is not known yet")
    if index.encapsulated:
        stop = min(index.size, stop + NEXT_ITEM_HEADER)
    return start, stop


def coalesce(
    ranges: Iterable[tuple[int, int]], max_gap: int = 0, max_block: int | None = None
) -> list[tuple[int, int]]:
    """Merge sorted-or-not ``(start, stop)`` ranges whose gap is at most ``max_gap``.

    Overlapping and touching ranges are always merged (up to ``max_block``).
    """
    ranges = list(ranges)
    if not ranges:
        return []
    starts = [r[0] for r in ranges]
    stops = [r[1] for r in ranges]
    _, mstarts, mstops = merge_offset_ranges(
        [""] * len(ranges),
        starts,
        stops,
        max_gap=max_gap,
        max_block=max_block,
    )
    return [(int(a), int(b)) for a, b in zip(mstarts, mstops, strict=True)]


@dataclass(frozen=True)
class FetchPlan:
    """The requests that fetching a set of frames costs.

    Attributes
    ----------
    frames : tuple of int
        The distinct frames, sorted. From a dry run (``plan()``): every frame the
        read needs, those already cached included (they cost no request).
    ranges : tuple of (int, int)
        The coalesced byte ranges, one request each, fetched in one round.
    unknown : tuple of int
        From a dry run of an object without offset table: the frames (sorted) whose
        place is not known until the items of the Pixel Data are walked up to them.
        They are not in ``ranges``: reading them costs that walk first (windows of
        ``scan_window`` bytes, counted in the ``index`` phase of ``stats``), then
        their bytes. Empty when every frame's place is known.
    """

    frames: tuple[int, ...]
    ranges: tuple[tuple[int, int], ...]
    unknown: tuple[int, ...] = ()

    @property
    def requests(self) -> int:
        """Number of requests (of ``ranges``: the frames whose place is known)."""
        return len(self.ranges)

    @property
    def nbytes(self) -> int:
        """Bytes fetched, gaps included (of ``ranges``: the frames whose place is known)."""
        return sum(b - a for a, b in self.ranges)


def pixel_span(index: FrameIndex) -> tuple[int, int] | None:
    """The byte range of every frame block, or None while the end of the last is unknown."""
    n = index.number_of_frames
    if n == 0 or int(index.stops[-1]) == UNKNOWN:
        return None
    return int(index.starts[0]), block_range(index, n - 1)[1]


def plan_frames(
    index: FrameIndex,
    frames: Iterable[int],
    *,
    max_gap: int | None = 0,
    max_block: int | None = None,
    held_below: int = 0,
    link: LinkEstimate | None = None,
    whole_below: int = 0,
) -> FetchPlan:
    """Plan the fetch of ``frames`` (0-based) as coalesced block ranges.

    Bytes before ``held_below`` (the header block already in memory) are not
    fetched again. With ``max_gap=None`` the ``link`` cost model chooses the gaps
    to bridge, and reads all the frames at once when that costs no more and they
    total at most ``whole_below`` bytes.
    """
    distinct = distinct_frames(frames)
    n = index.number_of_frames
    if distinct.size and (distinct[0] < 0 or distinct[-1] >= n):
        bad = int(distinct[0] if distinct[0] < 0 else distinct[-1])
        raise IndexError(f"frame {bad} out of range (0..{n - 1})")
    starts, stops = block_ranges(index, distinct)
    keep = stops > held_below
    wanted = np.maximum(starts[keep], held_below), stops[keep]
    chosen = tuple(distinct.tolist())
    if max_gap is not None or link is None:
        pairs = zip(wanted[0].tolist(), wanted[1].tolist(), strict=True)
        return _logged(FetchPlan(chosen, tuple(coalesce(pairs, max_gap or 0, max_block))))
    exact = touching(*wanted)
    span = pixel_span(index)
    if span is not None:
        span = (max(span[0], held_below), span[1])
        if span[1] - span[0] > whole_below:
            span = None
    ranges = cheapest_ranges(exact, link, max_block=max_block, span=span)
    return _logged(FetchPlan(chosen, tuple(ranges)))


def _logged(plan: FetchPlan) -> FetchPlan:
    """``plan``, logged at DEBUG (its frames, ranges and bytes)."""
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("plan of %d frame(s): %s", len(plan.frames), spans(plan.ranges))
    return plan


def spans(ranges: Sequence[tuple[int, int]], shown: int = 3) -> str:
    """``ranges`` for a log message: how many, their bytes and the first few."""
    first = ", ".join(f"{a}-{b}" for a, b in ranges[:shown])
    more = f", ... ({len(ranges) - shown} more)" if len(ranges) > shown else ""
    total = sum(b - a for a, b in ranges)
    return f"{len(ranges)} range(s), {total} bytes [{first}{more}]"


def block_ranges(index: FrameIndex, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`block_range` of many frames at once (sorted, distinct), as two arrays."""
    starts, stops = index.starts[frames], index.stops[frames]
    if stops.size and int(stops.min()) == UNKNOWN:
        raise ValueError("the end of the last frame is not known yet")
    if index.encapsulated:
        stops = np.minimum(index.size, stops + NEXT_ITEM_HEADER)
    return starts, stops


def touching(starts: np.ndarray, stops: np.ndarray) -> list[tuple[int, int]]:
    """Merge sorted ranges that touch or overlap, vectorised."""
    if not starts.size:
        return []
    reach = np.maximum.accumulate(stops)
    breaks = np.flatnonzero(starts[1:] > reach[:-1]) + 1
    firsts = np.concatenate(([0], breaks))
    lasts = np.concatenate((breaks - 1, [starts.size - 1]))
    return list(zip(starts[firsts].tolist(), reach[lasts].tolist(), strict=True))

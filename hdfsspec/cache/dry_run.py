"""The dry run of a frame read (``plan()``): what reading frames would fetch now.

No frame is fetched and the items of the Pixel Data are never walked: the plan is
made from what the :class:`~hdfsspec.cache.layout.Layout` knows without a walk (the
offset tables, or the frames a walk has found so far), and mirrors what
:meth:`FrameStore.load <hdfsspec.cache.frames.FrameStore.load>` would then ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence

from hdfsspec.cache.layout import Layout
from hdfsspec.dicom.fragment_items import find_items_end
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.io.planning import FetchPlan

__all__ = ["dry_run"]


def dry_run(
    layout: Layout,
    held: Container[int],
    plan: Callable[[FrameIndex, list[int]], FetchPlan],
    frames: Sequence[int],
) -> FetchPlan:
    """The :class:`~hdfsspec.io.planning.FetchPlan` of reading ``frames`` now.

    Its ``frames`` are all of them, its ranges fetch those not ``held``. No frame is
    fetched and the items of the Pixel Data are never walked: without an offset
    table, the frames a walk has not reached yet are the plan's ``unknown``. The only
    requests a plan may make are those of an offset table the open has not read yet,
    which a read would make first: the rest of a Basic Offset Table longer than the
    first request (one request, 4 bytes a frame) or the tile table of a dual
    DICOM-TIFF file (at most two); the file's ``stats`` count them in the ``index``
    phase. The last frame of an object whose only table is a Basic Offset Table is
    planned as its read asks for it: from its start, twice the largest frame (at
    least 64 KiB), to find its end.

    Parameters
    ----------
    layout : Layout
        What is known of the object.
    held : container of int
        The frames the cache holds (they cost nothing).
    plan : callable
        Plans the fetch of frames of an index (the frame store's policy).
    frames : sequence of int
        The frames, 0-based, distinct, sorted and in range.
    """
    chosen = tuple(frames)
    missing = [f for f in chosen if f not in held]
    if not missing:
        return FetchPlan(chosen, ())
    index = layout.view(frames=0)  # the offset tables, or the start of a walk
    if layout.scan is None:  # the tables give the index: no walk
        index = layout.view(frames=missing[-1] + 1)
    else:  # no table: what a walk has found so far, never walked here
        index = layout.known() or index
    n = index.number_of_frames
    known = [f for f in missing if f < n]
    unknown = tuple(f for f in missing if f >= n)
    last = None
    if known and known[-1] == n - 1 and int(index.stops[-1]) == UNKNOWN:
        known.pop()
        last = _last_request(layout, index)
    ranges = list(plan(index, known).ranges) if known else []
    if last is not None and not any(a <= last[0] and last[1] <= b for a, b in ranges):
        ranges.append(last)
    return FetchPlan(chosen, tuple(ranges), unknown)


def _last_request(layout: Layout, index: FrameIndex) -> tuple[int, int] | None:
    """The request a read of the last frame makes to find its end, when only a Basic
    Offset Table gave its start (see :meth:`~hdfsspec.cache.layout.Layout.walk_last`);
    None when the header bytes hold it."""
    prefix = layout.parsed.prefix
    start, held = int(index.starts[-1]), len(prefix)
    if start < held:
        try:  # walked in the bytes held, without a request
            find_items_end(_unheld, start, layout.size, prefix[start:], 0, path=layout.path)
            return None
        except _Unheld:
            pass
    first = max(start, held)
    if first >= layout.size:
        return None
    return first, min(layout.size, first + layout.last_guess(index))


class _Unheld(Exception):
    """A walk of the held bytes needs more of them."""


def _unheld(start: int, stop: int) -> bytes:
    raise _Unheld

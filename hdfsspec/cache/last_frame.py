"""The end of the last frame where the offset table does not give it.

A Basic Offset Table gives the start of each frame only: the last frame ends where its
items do, which a walk of its items from its start finds (one request, of a guess of
its size, in most cases). :class:`~hdfsspec.cache.layout.Layout` keeps what is found.
"""

from __future__ import annotations

from collections.abc import Callable

from hdfsspec.dicom.fragment_items import find_items_end
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.io.planning import block_range

__all__ = ["last_guess", "walk_to_last_end"]

Block = tuple[int, bytes]


def last_guess(index: FrameIndex) -> int:
    """Bytes to read from the last frame's start to find its end: twice the largest frame."""
    known = index.starts[1:] - index.starts[:-1]
    return max(64 * 1024, 2 * int(known.max(initial=0)) + 16)


def walk_to_last_end(
    index: FrameIndex,
    prefix: bytes,
    held: bytes,
    fetch: Callable[[int, int], bytes],
    size: int,
    path: str | None,
) -> tuple[FrameIndex, Block | None] | None:
    """The index with the last frame's end, and that frame's block if the walk read it all.

    Parameters
    ----------
    index : FrameIndex
        The index, its last frame's end unknown (else None is returned).
    prefix : bytes
        The object's first bytes (they may hold the last frame).
    held : bytes
        Bytes from the last frame's start already fetched, if any.
    fetch : callable
        ``fetch(start, stop)``: bytes of the object.
    size : int
        The object's size.
    path : str or None
        The object's name, for errors.

    Returns
    -------
    tuple or None
        ``(index, block)``: the index completed and the last frame's block (or None);
        None when the index knows the end already (or has no frame).
    """
    if index.number_of_frames == 0 or int(index.stops[-1]) != UNKNOWN:
        return None
    start = int(index.starts[-1])
    if len(held) < len(prefix) - start:
        held = prefix[start:]  # the first request may already hold it
    pos, data = find_items_end(fetch, start, size, held, last_guess(index), path=path)
    resolved = index.with_last_stop(pos)
    _, stop = block_range(resolved, index.number_of_frames - 1)
    return resolved, ((start, data[: stop - start]) if stop <= start + len(data) else None)

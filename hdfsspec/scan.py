"""Locate the fragments of encapsulated Pixel Data that has no offset table.

The items are walked with large windows, several fetched concurrently per round
(never three tiny reads per fragment); fragments are then grouped into frames
one-to-one, or on JPEG / JPEG 2000 start markers checked against Number of
Frames. Pure: reads through a ``fetch_ranges`` callable, no fsspec.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hdfsspec._types import DEFAULT_OPTIONS, FetchRanges, ReadOptions
from hdfsspec.errors import FrameIndexError, TruncatedDicomError
from hdfsspec.header import ITEM, SEQUENCE_DELIMITER

if TYPE_CHECKING:
    from hdfsspec.parse import ParsedHeader

__all__ = ["START_MARKERS", "ItemScan", "group_fragments", "scan_items"]

START_MARKERS = (b"\xff\xd8", b"\xff\x4f")  # JPEG / JPEG-LS SOI, JPEG 2000 SOC
_PIXEL_TAG = 0x7FE00010


@dataclass(frozen=True)
class ItemScan:
    """Fragment items found by a scan: absolute offsets, value lengths, first bytes."""

    offsets: list[int]
    lengths: list[int]
    heads: list[bytes]
    end: int
    requests: int
    bytes_fetched: int
    delimited: bool = True


def scan_items(
    fetch_ranges: FetchRanges,
    parsed: ParsedHeader,
    options: ReadOptions = DEFAULT_OPTIONS,
    on_chunk: Callable[[int, bytes], None] | None = None,
) -> ItemScan:
    """Walk every fragment item of encapsulated Pixel Data with large windows.

    Each round fetches ``options.scan_concurrency`` consecutive windows of
    ``options.scan_window`` bytes concurrently, then walks the item headers they
    hold. The bytes already in ``parsed.prefix`` are used first. Each round's
    bytes are passed to ``on_chunk(offset, data)`` (the cache keeps what fits).
    """
    size, path = parsed.size, parsed.path
    chunk, base = parsed.prefix, 0
    offsets: list[int] = []
    lengths: list[int] = []
    heads: list[bytes] = []
    requests = fetched = 0
    pos = parsed.header_end
    while True:
        if pos + 8 > size:
            if pos == size:  # no Sequence Delimitation Item: tolerated, as pydicom does
                return ItemScan(offsets, lengths, heads, pos, requests, fetched, False)
            raise TruncatedDicomError(
                "fragment item header cut off by the end of the object",
                path=path,
                offset=pos,
                tag=_PIXEL_TAG,
            )
        if min(pos + 10, size) > base + len(chunk):  # item header and 2 marker bytes
            # continue where the last round ended when the skipped bytes are few: the
            # rounds stay contiguous and their frames can be kept by the cache
            end = base + len(chunk)
            first = end if 0 <= pos - end <= options.scan_window else pos
            stop = min(size, max(pos + 10, first + options.scan_window * options.scan_concurrency))
            ranges = [
                (s, min(stop, s + options.scan_window))
                for s in range(first, stop, options.scan_window)
            ]
            chunk, base = b"".join(fetch_ranges(ranges)), first
            requests += len(ranges)
            fetched += len(chunk)
            if len(chunk) != stop - first:
                raise TruncatedDicomError(
                    "the object is shorter than its reported size",
                    path=path,
                    offset=first + len(chunk),
                    tag=_PIXEL_TAG,
                )
            if on_chunk is not None:
                on_chunk(base, chunk)
        rel = pos - base
        group, elem, length = struct.unpack("<HHL", chunk[rel : rel + 8])
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            return ItemScan(offsets, lengths, heads, pos + 8, requests, fetched)
        if tag != ITEM:
            raise FrameIndexError(
                f"expected a fragment item (FFFE,E000) or the sequence delimiter, found {tag:08X}",
                path=path,
                offset=pos,
                tag=_PIXEL_TAG,
            )
        if pos + 8 + length > size:
            raise TruncatedDicomError(
                f"fragment item of {length} bytes ends beyond the end of the object",
                path=path,
                offset=pos,
                tag=_PIXEL_TAG,
            )
        offsets.append(pos)
        lengths.append(length)
        heads.append(bytes(chunk[rel : rel + 8 + min(length, 2)]))
        pos += 8 + length


def group_fragments(scan: ItemScan, n: int, parsed: ParsedHeader) -> tuple[np.ndarray, np.ndarray]:
    """Return frame ``(starts, stops)`` from the fragments of a scan."""
    offsets = np.asarray(scan.offsets, dtype=np.int64)
    ends = offsets + 8 + np.asarray(scan.lengths, dtype=np.int64)
    count = offsets.size
    if count == n:
        return offsets, ends
    if n == 1 and count > 0:
        return offsets[:1], ends[-1:]
    marked = np.array([h[8:10] in START_MARKERS for h in scan.heads], dtype=bool)
    if count > n and int(marked.sum()) == n and marked[0]:
        first = np.flatnonzero(marked)
        last = np.append(first[1:] - 1, count - 1)
        return offsets[first], ends[last]
    raise FrameIndexError(
        f"cannot split {count} fragments into {n} frames ({int(marked.sum())} fragments "
        "begin with a JPEG or JPEG 2000 start marker) and there is no offset table",
        path=parsed.path,
        offset=parsed.header_end,
        tag=_PIXEL_TAG,
    )

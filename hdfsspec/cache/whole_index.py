"""A frame index in one go: from the tables, the TIFF tile table, or a whole walk of the items.

The cache learns indexes lazily (:mod:`hdfsspec.cache.layout`, :mod:`hdfsspec.cache.walk`);
:func:`build_index` is the one-call form, for tools and tests.
"""

from __future__ import annotations

from collections.abc import Callable

from hdfsspec._types import DEFAULT_OPTIONS, FetchRanges, ReadOptions
from hdfsspec.cache.item_scan import ItemScanner
from hdfsspec.dicom.fragments import ItemScan, group_fragments
from hdfsspec.dicom.frame_locations import index_from_tables, scanned_index, tiff_index
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.dicom.parse import ParsedHeader, number_of_frames

__all__ = ["build_index", "scan_items"]


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
    return ItemScanner(parsed, fetch_ranges, 0, options, on_chunk).result()


def build_index(
    parsed: ParsedHeader,
    fetch_ranges: FetchRanges,
    options: ReadOptions = DEFAULT_OPTIONS,
    on_chunk: Callable[[int, bytes], None] | None = None,
) -> tuple[FrameIndex, ItemScan | None]:
    """Locate every frame of the object.

    Parameters
    ----------
    parsed : ParsedHeader
        Output of :func:`parse_header`.
    fetch_ranges : callable
        Fetches many ranges at once; used only when the fragments must be scanned.
    options : ReadOptions, optional
        Scan window and concurrency.
    on_chunk : callable, optional
        Receives ``(offset, bytes)`` of every window round a scan fetches.

    Returns
    -------
    index : FrameIndex
    scan : ItemScan or None
        The scan, when one was needed (its item heads serve later small reads).
    """
    fetch = lambda a, b: fetch_ranges([(a, b)])[0]  # noqa: E731
    index = index_from_tables(parsed, fetch)
    if index is None:
        index = tiff_index(parsed, fetch, fetch_ranges)
    if index is not None:
        return index, None
    scan = scan_items(fetch_ranges, parsed, options, on_chunk)
    starts, stops = group_fragments(scan, number_of_frames(parsed), parsed)
    return scanned_index(parsed, starts, stops, delimited=scan.delimited), scan

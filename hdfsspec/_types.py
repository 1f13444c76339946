"""Shared small types and the read policy defaults.

The cache and the planner take every policy value as an argument; the
defaults live here so that the filesystem (which owns them) and a cache opened
directly with ``cache_type="dicom"`` agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

Fetch = Callable[[int, int], bytes]
"""Return the bytes ``[start, stop)`` of the object."""

FetchRanges = Callable[[Sequence[tuple[int, int]]], list[bytes]]
"""Return the bytes of many ``(start, stop)`` ranges, fetched concurrently if possible."""

StreamRanges = Callable[
    [Sequence[tuple[int, int]], Callable[[int, "bytes | BaseException | None"], None]],
    Any,
]
"""Start GETs of ``(start, stop)`` ranges whose bodies go to a sink as they arrive
(:func:`hdfsspec.io.stream.stream_ranges`); return their future, or None where the
target reads only whole ranges."""

KiB = 1024
MiB = 1024 * KiB


def http_status(error: object) -> int | None:
    """The HTTP status of a failed request returned by ``cat_ranges`` (aiohttp's
    ``ClientResponseError`` has ``status``), if any."""
    return getattr(error, "status", None) if isinstance(error, BaseException) else None


def is_instance(obj: object, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` without importing ``module``.

    An object of that class exists only once its module is imported: asking costs no
    import (aiohttp, s3fs or the Azure SDK weigh tens of MB and a second to load).
    """
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(obj, cls)


ZERO_OK = ("max_gap", "tail_request")
"""Options of :class:`ReadOptions` that may be 0."""


@dataclass(frozen=True)
class ReadOptions:
    """Policy of the frame-aware cache.

    Parameters
    ----------
    max_cache_bytes : int
        Bound of the LRU of frame blocks, in bytes (default 256 MiB). The
        header block is kept besides it.
    first_request : int or None
        Size of the first request of a cold open. ``None`` (the default) sizes it by
        the link: one bandwidth-delay product, at least 64 KiB and at most 1 MiB (so
        the header and offset tables of a large slide come in the first round trip
        on a cloud link); it grows when the header and offset tables are larger.
    tail_request : int or None
        Size of a suffix range (``bytes=-N``) fetched in the same round as the first
        request of a cold open, where a dual DICOM-TIFF file (as Imaging Data Commons
        slides are) keeps its tile table, so that its first frames come in the next
        round trip. Asked for when the last object the filesystem opened was a dual
        DICOM-TIFF file (a bucket of slides; the first one reads its table in a round
        of its own) and, where the size is known before, the object is 4 MiB or more.
        ``None`` (the default): half the first request, at most 512 KiB; 0: never.
    scan_window : int
        Size of each window fetched while scanning Pixel Data that has no offset
        table (default 8 MiB).
    scan_concurrency : int
        Number of windows fetched concurrently in one round of a scan (default 4).
    max_gap : int or None
        Largest gap, in bytes, bridged when coalescing frame ranges. ``None`` (the
        default) lets the cost model of :mod:`hdfsspec.io.link` decide from the measured
        round trip and bandwidth, and read the whole Pixel Data when a plan covers
        most of it.
    max_block : int
        Largest coalesced range, in bytes (default 64 MiB).
    readahead : bool
        Follow the way reads walk the frames (one by one, across frames, or with a
        stride) and fetch the next frames ahead of them (default True; see
        :mod:`hdfsspec.cache.readahead`).
    """

    max_cache_bytes: int = 256 * MiB
    first_request: int | None = None
    tail_request: int | None = None
    scan_window: int = 8 * MiB
    scan_concurrency: int = 4
    max_gap: int | None = None
    max_block: int = 64 * MiB
    readahead: bool = True

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name in ("max_gap", "first_request", "tail_request") and value is None:
                continue
            if name == "readahead":
                if not isinstance(value, bool):
                    raise ValueError(f"ReadOptions.readahead must be True or False, got {value!r}")
                continue
            if not isinstance(value, int) or value < (0 if name in ZERO_OK else 1):
                raise ValueError(f"ReadOptions.{name} must be a positive integer, got {value!r}")

    def updated(self, **kwargs: Any) -> ReadOptions:
        """Return a copy with the given non-``None`` fields replaced."""
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


DEFAULT_OPTIONS = ReadOptions()

"""The one way the frame-aware cache asks its file for bytes.

:class:`Requests` fetches ranges (concurrently when the file can), checks that every
answer has the length asked for, counts requests and bytes per phase
(:class:`~hdfsspec.io.stats.CacheStats`) and teaches the link model
(:class:`~hdfsspec.io.link.LinkModel`) from the rounds it times. The layout, the frame
store and the byte reads of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache` all
share one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from hdfsspec._log import get_logger
from hdfsspec._types import Fetch, FetchRanges
from hdfsspec.errors import ObjectChangedError
from hdfsspec.io.link import LinkModel
from hdfsspec.io.planning import spans
from hdfsspec.io.redact import redact_url
from hdfsspec.io.stats import CacheStats

__all__ = ["Requests"]

_log = get_logger(__name__)


class Requests:
    """Fetch ranges of one object, checked, counted and timed.

    Parameters
    ----------
    fetcher : callable
        ``fetcher(start, stop) -> bytes`` of the underlying file.
    size : int
        Object size in bytes.
    fetch_ranges : callable, optional
        ``fetch_ranges([(start, stop), ...]) -> [bytes, ...]``, fetching concurrently.
    path : str, optional
        Name of the object for error messages.
    link : LinkModel, optional
        Cost model of the target; it learns from the rounds timed here.
    """

    def __init__(
        self,
        fetcher: Fetch,
        size: int,
        fetch_ranges: FetchRanges | None = None,
        path: str | None = None,
        link: LinkModel | None = None,
    ) -> None:
        self.fetcher, self.size, self.path = fetcher, size, path
        self.fetch_ranges = fetch_ranges
        self.link = link if link is not None else LinkModel()
        self.stats = CacheStats()
        self.hits = 0  # fsspec's counters (``BaseCache.hit_count`` ...)
        self.misses = 0
        self.requested = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the concurrent fetch (the file's filesystem is not)."""
        return {**self.__dict__, "fetch_ranges": None}

    def get(
        self,
        ranges: Sequence[tuple[int, int]],
        phase: str,
        keep_whole: bool = False,
        timed: bool = True,
    ) -> list[bytes]:
        """Fetch ranges (concurrently when possible), checking every length.

        A server that ignores Range answers with the whole object: it is sliced,
        or returned whole when ``keep_whole`` (the header buffer then keeps it).
        ``timed=False`` is for requests that overlap others (a scan's windows,
        fetched ahead): their time says nothing of the link on its own (nor does that
        of any batch that overlapped another).
        """
        began = time.perf_counter()
        flight = self.stats.begin()
        try:
            if self.fetch_ranges is not None and len(ranges) > 1:
                out = self.fetch_ranges(list(ranges))
            else:
                out = [self.fetcher(a, b) for a, b in ranges]
        finally:
            alone = self.stats.end(flight)
        seconds = time.perf_counter() - began if timed else 0.0
        if timed and alone:  # overlapping batches share the link: their time is no sample
            self.link.observe([b - a for a, b in ranges], seconds)
        received = 0
        for k, ((a, b), data) in enumerate(zip(ranges, out, strict=True)):
            if isinstance(data, BaseException):
                raise data
            received += len(data)
            if len(data) == self.size != b - a:  # the server ignored Range: whole object
                if keep_whole:
                    continue
                out[k] = data = data[a:b]
            if len(data) != b - a:
                raise ObjectChangedError(
                    f"asked for bytes {a}-{b} and received {len(data)}: the object is shorter "
                    "than its reported size, or was replaced while being read",
                    path=self.path,
                    offset=a + len(data),
                )
        self.stats.record(phase, len(ranges), received, seconds)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: %s round: %s", redact_url(self.path or "-"), phase, spans(ranges))
        self.misses += len(ranges)
        self.requested += received
        return out

    def one(self, start: int, stop: int, phase: str) -> bytes:
        """Fetch one range (see :meth:`get`)."""
        return self.get([(start, stop)], phase)[0]

    def hit(self, phase: str, count: int = 1) -> None:
        """Count ``count`` reads served without a request."""
        self.hits += count
        self.stats.hit(phase, count)

    def fetched_before(self, nbytes: int, requests: int = 1) -> None:
        """Count bytes the file fetched for the cache before it existed (with its info), in
        ``requests`` requests of one round."""
        self.stats.record("header", requests, nbytes, rounds=1)
        self.misses += requests
        self.requested += nbytes

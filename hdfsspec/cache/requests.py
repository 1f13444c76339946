"""The one way the frame-aware cache asks its file for bytes.

:class:`Requests` fetches ranges (concurrently when the file can), checks that every
answer has the length asked for, counts requests and bytes per phase
(:class:`~hdfsspec.io.stats.CacheStats`) and teaches the link model
(:class:`~hdfsspec.io.link.LinkModel`) from the rounds it times. The layout, the frame
store and the byte reads of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache` all
share one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hdfsspec._log import get_logger
from hdfsspec._types import Fetch, FetchRanges, StreamRanges
from hdfsspec.errors import ObjectChangedError
from hdfsspec.io.link import LinkModel
from hdfsspec.io.planning import spans
from hdfsspec.io.redact import redact_url
from hdfsspec.io.retry import reason
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
    stream_ranges : callable, optional
        ``stream_ranges(ranges, sink) -> Future | None``: starts GETs whose bodies go
        to ``sink`` as they arrive (see :mod:`hdfsspec.io.stream`), or returns None
        where the file reads only whole ranges.
    """

    def __init__(
        self,
        fetcher: Fetch,
        size: int,
        fetch_ranges: FetchRanges | None = None,
        path: str | None = None,
        link: LinkModel | None = None,
        stream_ranges: StreamRanges | None = None,
    ) -> None:
        self.fetcher, self.size, self.path = fetcher, size, path
        self.fetch_ranges, self.stream_ranges = fetch_ranges, stream_ranges
        self.link = link if link is not None else LinkModel()
        self.stats = CacheStats()
        self.hits = 0  # fsspec's counters (``BaseCache.hit_count`` ...)
        self.misses = 0
        self.requested = 0
        self._live: set[Any] = set()  # the futures of the streams running

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the concurrent fetch (the file's filesystem is not)."""
        return {**self.__dict__, "fetch_ranges": None, "stream_ranges": None, "_live": set()}

    def close(self) -> None:
        """Cancel the streams still running: nothing more is wanted of them."""
        for future in list(self._live):
            future.cancel()

    @property
    def can_stream(self) -> bool:
        """Whether :meth:`stream` may hand bytes over as they arrive (else: not started)."""
        return self.stream_ranges is not None

    def stream(
        self,
        ranges: Sequence[tuple[int, int]],
        phase: str,
        sink: Callable[[int, int, bytes], None],
        done: Callable[[BaseException | None], None],
    ) -> bool:
        """Start fetching ``ranges``, handing their bytes over as they arrive.

        ``sink(k, offset, chunk)`` gets the bytes of range ``k`` in order, from the event
        loop's thread; what a failed stream left of a range is read the usual way
        (:meth:`get`: retries, fallbacks, the version pin) in a thread of its own, and
        handed to ``sink`` too. ``done(error)`` is called once, when every range is in
        (``error`` None) or what was left could not be read. Counted like :meth:`get`
        (a request per range, never timed: streams overlap the reads they serve).

        Returns False, having started nothing, where the file cannot stream.
        """
        if self.stream_ranges is None or not ranges:
            return False
        flow = _Stream(self, list(ranges), phase, sink, done)
        future = self.stream_ranges(flow.ranges, flow.feed)
        if future is None:
            self.stats.end(flow.flight)
            return False
        self._live.add(future)
        future.add_done_callback(self._live.discard)
        future.add_done_callback(flow.abandoned)
        return True

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


class _Stream:
    """The state of one :meth:`Requests.stream`: bytes received per range, the ranges
    still open, and what failed (its rest read the usual way once all have ended)."""

    def __init__(
        self,
        requests: Requests,
        ranges: list[tuple[int, int]],
        phase: str,
        sink: Callable[[int, int, bytes], None],
        done: Callable[[BaseException | None], None],
    ) -> None:
        self.requests, self.ranges, self.phase = requests, ranges, phase
        self.sink, self.done = sink, done
        self.got = [0] * len(ranges)
        self.failed: list[int] = []
        self.open = set(range(len(ranges)))  # the ranges not ended yet
        self._lock = threading.Lock()
        self.error: BaseException | None = None  # the sink's own failure
        self.flight = requests.stats.begin()

    def feed(self, k: int, chunk: bytes | BaseException | None) -> None:
        """The next bytes of range ``k``, or its end (``None``), or its failure."""
        if isinstance(chunk, bytes):
            if self.error is None:
                try:
                    self.sink(k, self.ranges[k][0] + self.got[k], chunk)
                except Exception as error:
                    self.error = error
            self.got[k] += len(chunk)
            return
        with self._lock:
            if k not in self.open:
                return
            self.open.discard(k)
            last = not self.open
        if isinstance(chunk, asyncio.CancelledError):  # the file closed: nothing more wanted
            self.error = self.error or chunk
        elif chunk is not None:
            self.failed.append(k)
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug(
                    "%s: a stream failed after %d of %d bytes (%s): the rest is read again",
                    redact_url(self.requests.path or "-"),
                    self.got[k],
                    self.ranges[k][1] - self.ranges[k][0],
                    reason(chunk),
                )
        if last:
            self._ended()

    def abandoned(self, future: Any) -> None:
        """The streams' future is done: if it was cancelled before every range had ended
        (before it even started), the ranges left end now, so that nobody waits for them."""
        if future.cancelled():
            for k in sorted(self.open):
                self.feed(k, asyncio.CancelledError())

    def _ended(self) -> None:
        requests = self.requests
        requests.stats.end(self.flight)
        received = sum(self.got)
        requests.stats.record(self.phase, len(self.ranges), received)
        requests.misses += len(self.ranges)
        requests.requested += received
        if _log.isEnabledFor(logging.DEBUG):
            path = redact_url(requests.path or "-")
            _log.debug("%s: %s stream: %s", path, self.phase, spans(self.ranges))
        if self.failed and self.error is None:  # not in the event loop: get() waits on it
            threading.Thread(target=self._rest, daemon=True, name="hdfsspec-rest").start()
        else:
            self.done(self.error)

    def _rest(self) -> None:
        """Read what the failed streams left, the usual way, and hand it over."""
        error: BaseException | None = None
        try:
            rest = [(self.ranges[k][0] + self.got[k], self.ranges[k][1]) for k in self.failed]
            datas = self.requests.get(rest, self.phase, timed=False)
            for k, (a, _), data in zip(self.failed, rest, datas, strict=True):
                self.sink(k, a, data)
        except BaseException as raised:
            error = raised
        self.done(error)

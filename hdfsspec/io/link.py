"""A cost model of the link to the target: round trip, bandwidth, concurrency.

The model is learnt from the requests the cache makes (their count, bytes and
wall time) and decides how to fetch a set of byte ranges:

* a batch of ``n`` ranges totalling ``b`` bytes over ``c`` concurrent connections
  costs about ``ceil(n / c) * rtt + n * overhead + b / bandwidth`` seconds;
* so bridging the gap between two ranges pays when it saves a wave of requests
  (or per-request overhead) worth more than the gap's transfer time, and
* reading a whole span (e.g. the whole Pixel Data) pays when the plan covers most
  of it.

Pure: no I/O, no fsspec. Thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hdfsspec._fork import renew_after_fork
from hdfsspec._types import ReadOptions

__all__ = [
    "DEFAULT_CONCURRENCY",
    "LinkEstimate",
    "LinkModel",
    "cheapest_ranges",
    "is_large",
    "link_sized_first_request",
    "ramped_size",
    "tail_size",
]

DEFAULT_RTT = 0.030
"""Seconds assumed for a round trip before any request was timed (cloud storage)."""
DEFAULT_BANDWIDTH = 100e6
"""Bytes per second assumed before a large transfer was timed."""
DEFAULT_CONCURRENCY = 10
"""Concurrent requests assumed when the target does not say (s3fs's pool default)."""
DEFAULT_OVERHEAD = 0.0001
"""Client-side seconds per request (signing, parsing), paid one after the other."""

WHOLE_FRACTION = 0.75
"""A plan reading this fraction of a span reads all of it."""
OVERHEAD_BRIDGE = 0.05
"""Gap bytes bridged only to save per-request overhead (no wave saved): at most this
fraction of the exact bytes. Saving a whole wave of requests is not capped."""

_SMALL = 256 * 1024  # a request this small times the round trip
_LARGE = 4 * 1024 * 1024  # a batch this large times the bandwidth
_ALPHA = 0.3  # weight of a new sample


FIRST_REQUEST_MIN = 64 * 1024
FIRST_REQUEST_MAX = 1024 * 1024
TAIL_REQUEST_MAX = 512 * 1024
"""Largest default suffix range of a cold open (see :func:`tail_size`)."""
LARGE_OBJECT = 8
"""An object at least this many times the tail gets one in its first round."""
LARGE_OBJECT_MIN = 4 * 1024 * 1024
"""... and at least this large (a slide, not a CT slice)."""


def link_sized_first_request(estimate: LinkEstimate) -> int:
    """Bytes of a cold open's first request: what the link carries in one round trip.

    One bandwidth-delay product, at least 64 KiB and at most 1 MiB: on a cloud link
    (30 ms, 100 MB/s) 1 MiB, which holds the header and offset tables of a large slide
    (a 24,649-frame slide's Extended Offset Table is 396 KB), so its first frames come in
    the next round trip; less where the link says bytes are dear.
    """
    bdp = int(estimate.rtt * estimate.bandwidth)
    return max(FIRST_REQUEST_MIN, min(FIRST_REQUEST_MAX, bdp))


def tail_size(option: int | None, first: int) -> int:
    """Bytes of the suffix range fetched with a cold open's first request of ``first`` bytes.

    ``option`` is :attr:`~hdfsspec.ReadOptions.tail_request`: None gives half the first
    request, at most :data:`TAIL_REQUEST_MAX` (the tile table of a 24,649-tile BigTIFF
    is 394 KB); 0 none.
    """
    return min(TAIL_REQUEST_MAX, first // 2) if option is None else option


def is_large(size: int, options: ReadOptions, estimate: LinkEstimate) -> bool:
    """Whether an object of ``size`` bytes is large enough for a tail in its first round:
    at least :data:`LARGE_OBJECT` times the tail and :data:`LARGE_OBJECT_MIN` (a few
    hundred KB more is then a small share of what a reader of it fetches)."""
    first = options.first_request or link_sized_first_request(estimate)
    tail = tail_size(options.tail_request, first)
    return tail > 0 and size >= max(LARGE_OBJECT * tail, first + tail, LARGE_OBJECT_MIN)


def ramped_size(size: int, count: int, k: int) -> int:
    """Size of the ``k``-th (from 1) of ``count`` transfers started together: k/count of ``size``.

    Concurrent responses share the link, so transfers of one size started together
    arrive together: whatever uses them then waits, and the next ones are asked for on
    an idle link. Sizes ramping up to ``size`` spread the arrivals: the first is used
    while the others still come in, and each next one is asked for while the link is
    busy. From ``k = count`` on (and for ``count`` < 2), ``size``; never below 1.
    """
    if count < 2 or k >= count:
        return size
    return max(1, size * k // count)


@dataclass(frozen=True)
class LinkEstimate:
    """A snapshot of the model: what one batch of requests costs.

    Attributes
    ----------
    rtt : float
        Round-trip time in seconds (time to the first byte of a small response).
    bandwidth : float
        Bytes per second of a large transfer.
    concurrency : int
        Requests in flight at once.
    overhead : float
        Client-side seconds per request.
    """

    rtt: float = DEFAULT_RTT
    bandwidth: float = DEFAULT_BANDWIDTH
    concurrency: int = DEFAULT_CONCURRENCY
    overhead: float = DEFAULT_OVERHEAD

    def seconds(self, requests: int, nbytes: int) -> float:
        """Estimated wall time of one batch of ``requests`` ranges totalling ``nbytes``."""
        if requests <= 0:
            return 0.0
        waves = math.ceil(requests / self.concurrency)
        return waves * self.rtt + requests * self.overhead + nbytes / self.bandwidth


class LinkModel:
    """Learns the round trip and bandwidth of a target from timed batches.

    Parameters
    ----------
    concurrency : int
        Requests the target filesystem runs at once (its connection pool).
    rtt, bandwidth, overhead : float
        Starting values, replaced as batches are observed.
    learn : bool
        False keeps the starting values (deterministic plans, e.g. in tests).
    """

    def __init__(
        self,
        concurrency: int = DEFAULT_CONCURRENCY,
        rtt: float = DEFAULT_RTT,
        bandwidth: float = DEFAULT_BANDWIDTH,
        overhead: float = DEFAULT_OVERHEAD,
        learn: bool = True,
    ) -> None:
        if concurrency < 1 or rtt < 0 or bandwidth <= 0 or overhead < 0:
            raise ValueError("concurrency and bandwidth must be positive, rtt and overhead >= 0")
        self.learn = learn
        self._lock = threading.Lock()
        renew_after_fork(self)
        self._estimate = LinkEstimate(rtt, bandwidth, concurrency, overhead)
        self.rtt_samples = 0
        self.bandwidth_samples = 0

    @property
    def estimate(self) -> LinkEstimate:
        """The current :class:`LinkEstimate`."""
        return self._estimate

    def observe(self, sizes: Sequence[int], seconds: float) -> None:
        """Learn from one batch: the sizes of its ranges and its wall time in seconds."""
        if not self.learn or not sizes or seconds <= 0:
            return
        with self._lock:
            est = self._estimate
            nbytes, n = int(sum(sizes)), len(sizes)
            waves = math.ceil(n / est.concurrency)
            if n == 1 and nbytes <= _SMALL:
                sample = max(0.0, seconds - nbytes / est.bandwidth - est.overhead)
                rtt = sample if self.rtt_samples == 0 else _mix(est.rtt, sample)
                self.rtt_samples += 1
                self._estimate = LinkEstimate(rtt, est.bandwidth, est.concurrency, est.overhead)
            elif nbytes >= _LARGE:
                transfer = seconds - waves * est.rtt - n * est.overhead
                if transfer > 0.25 * seconds:  # else the sample says little about bandwidth
                    sample = nbytes / transfer
                    bw = sample if self.bandwidth_samples == 0 else _mix(est.bandwidth, sample)
                    self.bandwidth_samples += 1
                    self._estimate = LinkEstimate(est.rtt, bw, est.concurrency, est.overhead)

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._after_fork()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def _mix(old: float, new: float) -> float:
    return (1 - _ALPHA) * old + _ALPHA * new


def cheapest_ranges(
    ranges: Sequence[tuple[int, int]],
    link: LinkEstimate,
    *,
    max_block: int | None = None,
    span: tuple[int, int] | None = None,
) -> list[tuple[int, int]]:
    """Return the cheapest way to fetch sorted, disjoint ``ranges`` over ``link``.

    Gaps are bridged smallest first as long as the estimated time of the batch
    falls (a bridged gap saves a request, and a wave of requests once the batch
    exceeds the link's concurrency, at the price of its bytes); gaps bridged only
    for per-request overhead add at most ``OVERHEAD_BRIDGE`` of the exact bytes. When ``span``
    (for instance the Pixel Data) is given and reading all of it is estimated
    to cost no more, or the plan reads at least ``WHOLE_FRACTION`` of it anyway,
    the span is returned instead, cut in ``max_block`` pieces.

    Parameters
    ----------
    ranges : sequence of (int, int)
        Sorted, non-overlapping ``(start, stop)`` byte ranges.
    link : LinkEstimate
        The cost model.
    max_block : int, optional
        Largest range returned.
    span : (int, int), optional
        A range holding all of ``ranges`` that may be read whole instead.

    Returns
    -------
    list of (int, int)
        Ranges covering all of ``ranges``, one request each.
    """
    if not ranges:
        return []
    starts = np.fromiter((a for a, _ in ranges), dtype=np.int64, count=len(ranges))
    stops = np.fromiter((b for _, b in ranges), dtype=np.int64, count=len(ranges))
    nbytes = int((stops - starts).sum())
    gaps = starts[1:] - stops[:-1]
    order = np.sort(gaps)
    # cost after bridging the k smallest gaps, for every k at once
    k = np.arange(len(order) + 1)
    added = np.concatenate(([0], np.cumsum(order)))
    requests = len(ranges) - k
    waves = np.ceil(requests / link.concurrency)
    cost = waves * link.rtt + requests * link.overhead + (nbytes + added) / link.bandwidth
    # within one count of waves, bridging saves only per-request overhead: its bytes
    # are capped, so a plan stays close to the exact bytes of its frames
    level = np.maximum.accumulate(np.where(np.r_[True, waves[1:] != waves[:-1]], k, 0))
    capped = added - added[level] > OVERHEAD_BRIDGE * nbytes
    best = int(np.argmin(np.where(capped, np.inf, cost)))  # first minimum: fewest bytes
    if span is not None and span[1] > span[0]:
        whole = _pieces(span[0], span[1], max_block)
        whole_cost = link.seconds(len(whole), span[1] - span[0])
        covered = (nbytes + float(added[best])) / (span[1] - span[0])
        # the span costs no more, or the plan reads most of it anyway: the rest of the
        # frames then come along for later reads
        if whole_cost <= float(cost[best]) or covered >= WHOLE_FRACTION:
            return whole
    threshold = int(order[best - 1]) if best > 0 else 0
    return _merge(starts, stops, threshold, max_block)


def _merge(
    starts: np.ndarray, stops: np.ndarray, max_gap: int, max_block: int | None
) -> list[tuple[int, int]]:
    if max_block is None or int(stops[-1] - starts[0]) <= max_block:  # vectorised
        breaks = np.flatnonzero(starts[1:] - stops[:-1] > max_gap) + 1
        firsts = np.concatenate(([0], breaks))
        lasts = np.concatenate((breaks - 1, [starts.size - 1]))
        return list(zip(starts[firsts].tolist(), stops[lasts].tolist(), strict=True))
    out: list[tuple[int, int]] = []
    a, b = int(starts[0]), int(stops[0])
    for s, e in zip(starts[1:].tolist(), stops[1:].tolist(), strict=True):
        if s - b <= max_gap and (max_block is None or e - a <= max_block):
            b = max(b, e)
        else:
            out.append((a, b))
            a, b = s, e
    out.append((a, b))
    return out


def _pieces(start: int, stop: int, max_block: int | None) -> list[tuple[int, int]]:
    if max_block is None or stop - start <= max_block:
        return [(start, stop)]
    count = -(-(stop - start) // max_block)
    step = -(-(stop - start) // count)
    return [(a, min(stop, a + step)) for a in range(start, stop, step)]

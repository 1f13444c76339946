"""Request, byte and hit counters of a cache, per phase (header, index, frames, other)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from hdfsspec._fork import renew_after_fork

__all__ = ["PHASES", "CacheStats", "PhaseStats"]

PHASES = ("header", "index", "frames", "other")


@dataclass
class PhaseStats:
    """Counters of one phase."""

    requests: int = 0
    bytes: int = 0
    hits: int = 0
    seconds: float = 0.0


@dataclass
class CacheStats:
    """Counters of a :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`, per phase.

    ``requests`` counts byte ranges asked of the backend (a concurrent batch of
    ``n`` ranges counts ``n``), ``rounds`` the round trips: batches started while
    no other was in flight (batches fetched together count once), ``bytes`` the bytes
    fetched, ``hits`` the reads served without a request, ``seconds`` the wall
    time spent waiting for them (for a scan: the walk, windows fetched ahead
    included).
    """

    phases: dict[str, PhaseStats] = field(
        default_factory=lambda: {p: PhaseStats() for p in PHASES}
    )
    rounds: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _in_flight: int = field(default=0, repr=False, compare=False)
    _started: int = field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        renew_after_fork(self)

    def _after_fork(self) -> None:
        """In a forked child: a new lock, and none of the parent's batches in flight."""
        self._lock = threading.Lock()
        self._in_flight = 0

    def begin(self) -> tuple[bool, int]:
        """A batch of requests starts: a new round unless another is in flight.

        Returns ``(alone, ticket)`` for :meth:`end`.
        """
        with self._lock:
            alone = self._in_flight == 0
            self.rounds += alone
            self._in_flight += 1
            self._started += 1
            return alone, self._started

    def end(self, began: tuple[bool, int]) -> bool:
        """The batch :meth:`begin` returned ``began`` for is done: whether it ran alone.

        Alone means no other batch was in flight at any time during it: only then
        does its wall time say something of the link.
        """
        with self._lock:
            self._in_flight -= 1
            return began[0] and self._started == began[1]

    def record(
        self, phase: str, requests: int, nbytes: int, seconds: float = 0.0, rounds: int = 0
    ) -> None:
        """Count ``requests`` ranges totalling ``nbytes``, taking ``seconds``.

        Rounds are counted by :meth:`begin`; ``rounds`` adds to them (a request made
        before the cache existed, such as the open's).
        """
        with self._lock:
            self.phases[phase].requests += requests
            self.phases[phase].bytes += nbytes
            self.phases[phase].seconds += seconds
            self.rounds += rounds

    def spent(self, phase: str, seconds: float) -> None:
        """Add wall time to a phase whose requests were counted untimed (a scan's)."""
        with self._lock:
            self.phases[phase].seconds += seconds

    def hit(self, phase: str, count: int = 1) -> None:
        """Count reads served from memory."""
        with self._lock:
            self.phases[phase].hits += count

    @property
    def requests(self) -> int:
        """Requests over all phases."""
        return sum(p.requests for p in self.phases.values())

    @property
    def bytes(self) -> int:
        """Bytes fetched over all phases."""
        return sum(p.bytes for p in self.phases.values())

    @property
    def hits(self) -> int:
        """Reads served from memory over all phases."""
        return sum(p.hits for p in self.phases.values())

    def as_dict(self) -> dict[str, object]:
        """Plain-dict view, for logging and benchmarks."""
        return {
            "requests": self.requests,
            "bytes": self.bytes,
            "rounds": self.rounds,
            "hits": self.hits,
            **{name: vars(p).copy() for name, p in self.phases.items()},
        }

    def __getstate__(self) -> dict[str, object]:
        return {"phases": self.phases, "rounds": self.rounds}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._after_fork()
        self._started = 0
        renew_after_fork(self)

"""Seeded, bounded faults for :class:`~hdfsspec.testing.ShapingProxy`: what a flaky store does.

A :class:`FaultPlan` given to the proxy (``ShapingProxy(..., faults=plan)``) decides,
response by response (of the requests it forwards: its ``local_objects`` are served
whole), whether to spoil it, and how:

``status``
    a 5xx answer (S3's XML error body: ``SlowDown`` for 503, ``InternalError`` for 500)
    instead of forwarding the request.
``forbid``
    a 403 (``AccessDenied``, as an expired presigned URL gets) instead of forwarding.
``reset``
    the head and part of the body, then a TCP reset (``SO_LINGER`` 0): the client's read
    fails mid-body (aiohttp: ``ClientPayloadError``).
``short``
    the head (with the full ``Content-Length``) and part of the body, then a clean close:
    the body is shorter than its ``Content-Length``.
``truncate``
    a consistent answer with fewer bytes than asked (``Content-Length`` and
    ``Content-Range`` say so): nothing fails on the wire, the data is short.
``stall``
    part of the body, a pause of ``stall_seconds``, then the rest.

Each kind has a rate (a fraction of the responses it may strike), an optional limit
(at most that many) and ``after`` (that many eligible responses go by untouched first:
``after=1`` spares an open's first GET). One random number is drawn per eligible
response from a generator seeded with ``seed``, so a sequence of responses meets the
same faults in every run (concurrent requests may arrive in another order). What was
injected is counted in :attr:`FaultPlan.injected` and in the proxy's log
(:attr:`~hdfsspec.testing.RequestLog.faults`).

An object replaced by another of the same size is not a fault of one response: write
the other object to the store behind the proxy between reads (see
:mod:`hdfsspec.testing.soak`).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hdfsspec.testing.servers import RequestLog

__all__ = ["KINDS", "Fault", "FaultPlan", "Strike", "error_response", "refuse", "spoil"]

KINDS = ("status", "forbid", "reset", "short", "truncate", "stall")
"""The kinds of fault, in the order their rates are laid out on ``[0, 1)``."""
_BODY_KINDS = ("reset", "short", "truncate", "stall")
_ERRORS = {
    403: ("Forbidden", "AccessDenied", "Request has expired"),
    500: ("Internal Server Error", "InternalError", "We encountered an internal error."),
    502: ("Bad Gateway", "BadGateway", "Bad gateway."),
    503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
    504: ("Gateway Timeout", "GatewayTimeout", "Gateway timeout."),
}


@dataclass(frozen=True)
class Fault:
    """How often one kind of fault strikes.

    Parameters
    ----------
    rate : float
        Fraction of the eligible responses it strikes (0 to 1; the rates of a plan
        add up to at most 1).
    limit : int, optional
        At most this many (no limit when None).
    after : int
        Eligible responses that go by before it may strike.
    """

    rate: float = 0.0
    limit: int | None = None
    after: int = 0


@dataclass(frozen=True)
class Strike:
    """The fault chosen for one response: its ``kind``, the fraction of the body sent
    before it (``cut``), for ``status`` the status, and the plan that chose it."""

    kind: str
    cut: float
    status: int
    plan: FaultPlan = field(repr=False, compare=False)

    def spare(self) -> None:
        """The response could not be spoilt (an error, an empty body): not counted."""
        self.plan.spared(self)


class FaultPlan:
    """Which responses the proxy spoils, and how (see the module's docstring).

    Parameters
    ----------
    seed : int
        Seed of the random draws (one per eligible response).
    status, forbid, reset, short, truncate, stall : float or Fault
        Each kind's rate, or its :class:`Fault`.
    statuses : sequence of int
        The statuses a ``status`` fault answers with, drawn in turn at random.
    stall_seconds : float
        Length of a ``stall``.
    methods : iterable of str
        The methods whose responses are eligible (GET by default: the reads).
    only : callable, optional
        ``only(method, target) -> bool``: a further filter of the eligible requests.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        status: float | Fault = 0.0,
        forbid: float | Fault = 0.0,
        reset: float | Fault = 0.0,
        short: float | Fault = 0.0,
        truncate: float | Fault = 0.0,
        stall: float | Fault = 0.0,
        statuses: Sequence[int] = (500, 503),
        stall_seconds: float = 2.0,
        methods: Iterable[str] = ("GET",),
        only: Callable[[str, str], bool] | None = None,
    ) -> None:
        given = dict(
            status=status, forbid=forbid, reset=reset, short=short, truncate=truncate, stall=stall
        )
        self.faults = {k: v if isinstance(v, Fault) else Fault(float(v)) for k, v in given.items()}
        if sum(f.rate for f in self.faults.values()) > 1.0 + 1e-9:
            raise ValueError("the rates of a fault plan add up to more than 1")
        if not statuses or any(s not in _ERRORS for s in statuses):
            raise ValueError(f"statuses must be among {sorted(_ERRORS)}, got {statuses!r}")
        self.seed, self.statuses = seed, tuple(statuses)
        self.stall_seconds = stall_seconds
        self.methods = frozenset(m.upper() for m in methods)
        self.only = only
        self.seen = 0
        """Eligible responses so far."""
        self.injected: Counter[str] = Counter()
        """Faults injected so far, by kind."""
        self._reserved: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def choose(self, method: str, target: str) -> Strike | None:
        """The fault for the response to ``method target``, or None (reserved until
        :meth:`applied` or :meth:`spared` says what became of it)."""
        if method.upper() not in self.methods or (self.only and not self.only(method, target)):
            return None
        with self._lock:
            n = self.seen
            self.seen += 1
            draw, cut = self._rng.random(), self._rng.random()
            status = self.statuses[self._rng.randrange(len(self.statuses))]
            low = 0.0
            for kind in KINDS:
                fault = self.faults[kind]
                if low <= draw < low + fault.rate:
                    if n < fault.after or (
                        fault.limit is not None and self._reserved[kind] >= fault.limit
                    ):
                        return None
                    self._reserved[kind] += 1
                    return Strike(kind, 0.1 + 0.8 * cut, status, self)
                low += fault.rate
        return None

    def applied(self, strike: Strike) -> None:
        """Count a fault as injected."""
        with self._lock:
            self.injected[strike.kind] += 1

    def spared(self, strike: Strike) -> None:
        """A fault chosen for a response it could not spoil (an error, an empty body)."""
        with self._lock:
            self._reserved[strike.kind] -= 1

    @property
    def total(self) -> int:
        """Faults injected so far, of every kind."""
        with self._lock:
            return sum(self.injected.values())


Entry = tuple[str, str, "int | None"]
"""``(method, target, first byte asked for)`` of a request, for the proxy's log."""
Head = Callable[[int, str, list[tuple[str, str]]], bytes]
"""Makes a response's status line and header from ``(status, reason, fields)``."""
Send = Callable[[asyncio.StreamWriter, bytes], Awaitable[None]]
"""Writes body bytes at the link's pace."""
Response = tuple[int, str, list[tuple[str, str]], bytes]
"""``(status, reason, header fields, body)`` of a response."""


async def refuse(
    strike: Strike,
    log: RequestLog,
    entry: Entry,
    writer: asyncio.StreamWriter,
    head: Head,
) -> None:
    """Answer with the error of a ``status`` or ``forbid`` fault, instead of forwarding."""
    status, reason, fields, body = error_response(
        403 if strike.kind == "forbid" else strike.status
    )
    strike.plan.applied(strike)
    log.fault(strike.kind)
    log.add(*entry, None, 0)
    writer.write(head(status, reason, fields) + body)
    await writer.drain()


async def spoil(
    strike: Strike,
    log: RequestLog,
    entry: Entry,
    writer: asyncio.StreamWriter,
    head: Head,
    send: Send,
    response: Response,
) -> bool | None:
    """Send ``response`` (status, reason, fields, body) spoilt by a fault of its body.

    Returns whether the connection stays open, or None when the response has no body
    to spoil (an error, a HEAD, an empty range): the fault is spared and the caller
    sends the response whole.
    """
    status, reason, fields, body = response
    least = 2 if strike.kind == "truncate" else 1  # a truncated answer keeps one byte
    if strike.kind not in _BODY_KINDS or not 200 <= status < 300 or len(body) < least:
        strike.spare()
        return None
    plan = strike.plan
    plan.applied(strike)
    log.fault(strike.kind)
    # logged before the client has any of it, as whole responses are: the bytes sent
    cut = cut_at(strike, body)
    log.add(*entry, None, len(body) if strike.kind == "stall" else cut)
    if strike.kind == "truncate":  # a consistent answer, with fewer bytes than asked
        writer.write(head(status, reason, [_shortened(k, v, cut) for k, v in fields]))
        await send(writer, body[:cut])
        return True
    writer.write(head(status, reason, fields))
    await send(writer, body[:cut])
    if strike.kind == "stall":
        await asyncio.sleep(plan.stall_seconds)
        await send(writer, body[cut:])
        return True
    if strike.kind == "reset":
        sock = writer.get_extra_info("socket")
        if sock is not None:  # close with RST, not FIN: the peer sees a reset connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:  # short: a clean close before Content-Length bytes
        writer.close()
    return False


def error_response(status: int) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """``(status, reason, fields, body)`` of an S3-style error answer."""
    reason, code, message = _ERRORS[status]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault</RequestId></Error>"
    ).encode()
    fields = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    return status, reason, fields, body


def cut_at(strike: Strike, body: bytes) -> int:
    """Body bytes sent before ``strike`` cuts, resets or stalls the response: 1 to
    ``len(body) - 1`` (none of a 1-byte body), so the client has part of it."""
    if len(body) < 2:
        return 0
    return min(len(body) - 1, max(1, int(len(body) * strike.cut)))


def _shortened(name: str, value: str, cut: int) -> tuple[str, str]:
    """A header field of a response cut to its first ``cut`` body bytes."""
    lower = name.lower()
    if lower == "content-length":
        return name, str(cut)
    if lower == "content-range" and value.startswith("bytes ") and "-" in value:
        span, _, size = value[6:].partition("/")
        first = int(span.split("-")[0])
        return name, f"bytes {first}-{first + cut - 1}/{size}"
    return name, value

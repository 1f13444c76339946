"""Bounded retries of transient transport failures, with exponential backoff and jitter.

s3fs retries a ranged read whole (``GetObject`` and the body's read) on a dropped
connection, a body cut short or S3's 503 Slow Down; the reads hdfsspec makes itself
must do as much: the open's first GET and the version-pinned ranges (which read the
body outside s3fs's retry loop, :mod:`hdfsspec.io.first_read`, :mod:`hdfsspec.io.version_pin`),
the ranges of a presigned URL (:mod:`hdfsspec.io.signed`) and those of an HTTP target
(fsspec's HTTP filesystem does not retry). Each of them retries here:

* at most :data:`ATTEMPTS` attempts (s3fs's default ``retries``), sleeping
  :func:`backoff` between them: from :data:`FIRST_DELAY` doubling up to
  :data:`MAX_DELAY`, each between half and all of that (jitter: concurrent ranges
  that failed together do not come back together);
* only what :func:`is_transient` says may pass: a body cut short or reset
  (aiohttp's ``ClientPayloadError``, botocore's ``ResponseStreamingError`` or
  ``IncompleteReadError``), a dropped or refused connection, a timeout, an HTTP
  408, 429 or 5xx, a body shorter than the range that nothing on the wire flagged
  (:class:`ShortRead`). Missing objects, denied access and a replaced object
  (``412``: :class:`~hdfsspec.errors.ObjectChangedError`) are never retried;
* every attempt sends what the first sent (the same ``If-Match``, ``VersionId`` or
  ETag condition): a retry never reads another version.

What still fails after the attempts becomes a :class:`~hdfsspec.errors.TransportError`
naming the object and the range (:func:`transport_error`, called by the file's
``_fetch_ranges`` and by the open).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from hdfsspec._log import get_logger
from hdfsspec._types import http_status, is_instance
from hdfsspec.errors import DicomFormatError, TransportError
from hdfsspec.io.redact import redact_url

__all__ = [
    "ATTEMPTS",
    "FIRST_DELAY",
    "MAX_DELAY",
    "TRANSIENT_STATUS",
    "ShortRead",
    "backoff",
    "check_length",
    "is_transient",
    "object_end",
    "retry_async",
    "retry_ranges",
    "s3_get",
    "transport_error",
]

T = TypeVar("T")
_log = get_logger(__name__)

ATTEMPTS = 5
"""Attempts of one read, the first included (s3fs's ``retries`` default)."""
FIRST_DELAY = 0.1
"""Seconds before the first retry (at most; at least half of it)."""
MAX_DELAY = 2.0
"""The longest sleep between two attempts."""
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP answers worth asking again: timeouts, throttling and server errors."""

_BOTOCORE = (  # botocore.exceptions: a body cut short, a timeout, a connection lost
    "ResponseStreamingError",
    "IncompleteReadError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "EndpointConnectionError",
)
_AZURE = ("ServiceRequestError", "ServiceResponseError", "IncompleteReadError")
_S3_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})
_CHAIN = 4  # causes followed to find what a backend wrapped
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)$")


class ShortRead(Exception):
    """A response body shorter than the range asked for, that nothing on the wire flagged.

    Parameters
    ----------
    start, stop : int
        The range asked for (``stop`` excluded).
    received : int
        The bytes received.
    """

    def __init__(self, start: int, stop: int, received: int) -> None:
        self.start, self.stop, self.received = start, stop, received
        super().__init__(f"received {received} of the {stop - start} bytes {start}-{stop}")

    def __reduce__(self):  # pickled with its fields
        return (type(self), (self.start, self.stop, self.received))


def check_length(data: bytes, start: int, stop: int) -> bytes:
    """``data``, the bytes of ``[start, stop)``; raise :class:`ShortRead` if fewer.

    More bytes than asked (a server that ignored Range sends the whole object) are
    left to the caller, which slices them.
    """
    if len(data) < stop - start:
        raise ShortRead(start, stop, len(data))
    return data


def object_end(content_range: object, stop: int) -> int:
    """``stop``, or the object's end if ``Content-Range: bytes A-B/SIZE`` says it comes first.

    A range that passes the end of the object gets the bytes up to the end: that is
    not a short body (a replaced object is told by its ETag, not here).
    """
    match = _CONTENT_RANGE.match(str(content_range or ""))
    return min(stop, int(match.group(1))) if match else stop


def backoff(retry: int, rng: random.Random | None = None) -> float:
    """Seconds to sleep before retry number ``retry`` (1 for the first retry).

    ``FIRST_DELAY * 2 ** (retry - 1)``, at most ``MAX_DELAY``, times a random factor
    between 0.5 and 1.
    """
    base = min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, retry - 1))
    return base * (0.5 + 0.5 * (rng or random).random())


def is_transient(error: object) -> bool:
    """Whether a failed read may succeed if made again.

    True for a body cut short (:class:`ShortRead`, aiohttp's ``ClientPayloadError``,
    botocore's ``ResponseStreamingError`` and ``IncompleteReadError``), a connection
    dropped, refused or timed out (aiohttp's ``ClientConnectionError``, botocore's
    connection errors, ``ConnectionError``, ``TimeoutError``), an HTTP status of
    :data:`TRANSIENT_STATUS` (aiohttp's ``ClientResponseError``, Azure's
    ``HttpResponseError``, or s3fs's ``OSError`` translated from S3's ``SlowDown``,
    ``InternalError``, ``ServiceUnavailable`` or ``RequestTimeout``), and a
    :class:`~hdfsspec.errors.TransportError`. False for everything else, in
    particular ``FileNotFoundError``, ``PermissionError`` and the typed DICOM errors
    (:class:`~hdfsspec.errors.ObjectChangedError` among them).
    """
    for _ in range(_CHAIN):
        if not isinstance(error, BaseException):
            return False
        if isinstance(error, FileNotFoundError | PermissionError | DicomFormatError):
            return False
        if _transient_alone(error):
            return True
        error = error.__cause__  # what s3fs or Azure wrapped
    return False


def _transient_alone(error: BaseException) -> bool:
    if isinstance(error, TransportError | ShortRead | ConnectionError | TimeoutError):
        return True
    if isinstance(error, asyncio.TimeoutError):  # not TimeoutError before Python 3.11
        return True
    status = http_status(error)
    if status is None:
        status = getattr(error, "status_code", None)  # Azure's HttpResponseError
    if isinstance(status, int):
        return status in TRANSIENT_STATUS
    if is_instance(error, "aiohttp", "ClientPayloadError") or is_instance(
        error, "aiohttp", "ClientConnectionError"
    ):
        return True
    if any(is_instance(error, "botocore.exceptions", name) for name in _BOTOCORE):
        return True
    if any(is_instance(error, "azure.core.exceptions", name) for name in _AZURE):
        return True
    response = getattr(error, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        meta = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in _S3_CODES or meta in TRANSIENT_STATUS
    return False


async def s3_get(fs: Any, bucket: str, key: str, start: int, stop: int, **extra: Any) -> Any:
    """One S3 ``GetObject`` of ``[start, stop)`` and its body, through s3fs's ``_call_s3``.

    The request is s3fs's call (its retries, its errors, its extra arguments): its error
    is returned, final. The body's errors are raised: :func:`retry_async` reads again.
    Returns ``(response, body)``. A negative ``start`` with ``stop`` 0 asks for the last
    ``-start`` bytes (a suffix range).
    """
    try:
        span = f"bytes={start}" if start < 0 and stop == 0 else f"bytes={start}-{stop - 1}"
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=span, **extra)
    except Exception as exc:
        return exc
    try:
        data = await resp["Body"].read()
    finally:
        resp["Body"].close()
    return resp, data


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int = ATTEMPTS,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Await ``attempt()`` until it returns, at most ``attempts`` times.

    An exception it raises is retried (after :func:`backoff`) while ``transient``
    says so and attempts are left; otherwise it propagates. What ``attempt``
    returns, an exception object included, is final: return the errors that must
    not be retried (those its backend has retried already).
    """
    for k in range(1, attempts + 1):
        try:
            return await attempt()
        except Exception as exc:
            if k >= attempts or not transient(exc):
                raise
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("attempt %d of %d failed (%s): again", k, attempts, reason(exc))
        await asyncio.sleep(backoff(k))
    raise AssertionError("unreachable")  # the last attempt returned or raised


def retry_ranges(
    read: Callable[[list[tuple[int, int]]], Sequence[Any]],
    ranges: Sequence[tuple[int, int]],
    out: Sequence[Any] | None = None,
    *,
    attempts: int = ATTEMPTS,
    transient: Callable[[BaseException], bool] = is_transient,
    together: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Any], int]:
    """Read ``ranges`` with ``read`` (failures returned, as ``cat_ranges(on_error="return")``
    does), then read again the ranges that failed transiently, round after round.

    A result shorter than its range becomes a :class:`ShortRead` (and is read again).
    ``out``, when given, is the first round's results (the first attempt). With
    ``together``, failed ranges are read again only when every failure is
    transient (a failure that says something of the URL ends the retries).

    Returns
    -------
    list, int
        The results (bytes, or the last failure of each range) and the number of
        ranges read again.
    """
    ranges = list(ranges)
    results = list(read(ranges) if out is None else out)
    results = [_short(data, a, b) for data, (a, b) in zip(results, ranges, strict=True)]
    retried = 0
    for k in range(1, attempts):
        failed = [i for i, x in enumerate(results) if isinstance(x, BaseException)]
        again = [i for i in failed if transient(results[i])]
        if not again or (together and len(again) < len(failed)):
            break
        if _log.isEnabledFor(logging.DEBUG):
            why = reason(results[again[0]])
            _log.debug("%d of %d range(s) failed (%s): read again", len(again), len(ranges), why)
        sleep(backoff(k))
        retried += len(again)
        more = read([ranges[i] for i in again])
        for i, data in zip(again, more, strict=True):
            results[i] = _short(data, *ranges[i])
    return results, retried


def _short(data: Any, start: int, stop: int) -> Any:
    """``data``, or a :class:`ShortRead` if it is bytes shorter than its range."""
    if isinstance(data, bytes | bytearray) and len(data) < stop - start:
        return ShortRead(start, stop, len(data))
    return data


def transport_error(
    error: BaseException, path: str | None, start: int, stop: int, attempts: int | None = None
) -> BaseException:
    """``error`` as raised to the caller: a transient failure becomes a
    :class:`~hdfsspec.errors.TransportError` naming ``path`` and the range, caused by
    ``error``; any other error (``FileNotFoundError``, ``PermissionError``,
    :class:`~hdfsspec.errors.ObjectChangedError`...) is returned as it is."""
    if isinstance(error, TransportError) or not is_transient(error):
        return error
    status = http_status(error)
    reason = f"HTTP {status}" if status is not None else f"{type(error).__name__}: {error}"
    made = TransportError(path, start, stop, reason, attempts)
    made.__cause__ = error
    made.__suppress_context__ = True
    return made


def reason(error: BaseException) -> str:
    """What went wrong, for a log message: the HTTP status, or the type and the
    message of the error with any URL secret redacted."""
    status = http_status(error)
    if status is not None:
        return f"HTTP {status}"
    return redact_url(f"{type(error).__name__}: {error}")[:300]

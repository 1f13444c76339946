"""Ranged reads of an S3 object through a presigned URL: S3 without botocore per request.

Every ranged GET that s3fs makes goes through aiobotocore's request machinery (the
event hooks, endpoint rules, signing and response parsing): 1-2 ms of client CPU a
request on the machines we measured, against about 0.25 ms for the same GET through
fsspec's HTTP filesystem. A batch of 200 scattered frames then spends more time in
the client than on the wire. :class:`SignedRanges` signs the object's URL once with
the target's own client (``S3FileSystem.url``: a presigned URL, or the plain URL of
an anonymous client) and reads ranges of it with fsspec's
:class:`~fsspec.implementations.http.HTTPFileSystem`, sending ``If-Match`` with the
ETag of the open so that a replaced object answers 412
(:class:`~hdfsspec.errors.ObjectChangedError`) instead of other bytes.

It is used only where a presigned GET means the same request as s3fs's: no
requester-pays, no SSE-C or other extra request arguments, no proxies or TLS
settings of botocore's that aiohttp would not apply, no proxy in the environment.
On a 403 (an expired URL) the URL is signed again once. Reads that still fail are
made again by the target filesystem: its retries apply, and its own errors
(``FileNotFoundError``, ``PermissionError``) reach the caller unchanged. After a
failure that says something of the URL (a 403 signed again, a 404...) the target
serves the file from then on. A transient one (a 5xx such as S3's 503 Slow Down, a
dropped connection, a body cut short or shorter than its range) is read again on
the URL, with backoff (:func:`hdfsspec.io.retry.retry_ranges`, the same ``If-Match``);
the ranges that still fail go to the target, and signed reads go on, until
:data:`TRANSIENT_LIMIT` batches have sent it some.

The URL is a bearer credential while it is valid: the loggers of fsspec's HTTP
filesystem (which logs each URL it fetches) and aiohttp get a redacting filter
(:func:`hdfsspec.io.redact.install`) when a :class:`SignedRanges` is made, no failed GET
of it is raised (its ranges are read again by the target), and the ``repr`` of a
:class:`SignedRanges` names the object, never the URL.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

import fsspec

from hdfsspec._fork import renew_after_fork
from hdfsspec._log import get_logger
from hdfsspec._types import http_status, is_instance
from hdfsspec.errors import ObjectChangedError
from hdfsspec.io.redact import install as install_redaction
from hdfsspec.io.retry import is_transient, reason, retry_ranges
from hdfsspec.io.stream import Sink, stream_ranges

__all__ = [
    "POOL",
    "SignedRanges",
    "http_client",
    "proxied",
    "signable",
    "signed_ranges",
    "timeouts",
]

EXPIRES = 3600
"""Seconds a presigned URL is asked to stay valid; it is signed again after half."""
POOL = 256
"""Connections of the HTTP session of signed reads (aiohttp's default is 100): a batch
of 200 scattered frames goes out as one wave of requests, not two."""
TRANSIENT_LIMIT = 3
_log = get_logger(__name__)
"""Batches with a transient failure (5xx, dropped connection) that outlasted the retries
on the URL, after which s3fs reads."""
_UNSAFE_CONFIG = ("proxies", "proxies_config", "client_cert")
_UNSAFE_CLIENT = ("verify", "config", "use_ssl", "aws_session_token")

Fallback = Callable[[Sequence[tuple[int, int]]], list[bytes]]


def signed_ranges(
    target: Callable[[], fsspec.AbstractFileSystem],
    path: str,
    etag: str | None,
    http: Callable[[], fsspec.AbstractFileSystem],
    fallback: Fallback,
) -> SignedRanges | None:
    """A :class:`SignedRanges` for ``path`` of the target, or None where it would not be the same.

    Parameters
    ----------
    target : callable
        Returns the target filesystem (a new one in a forked child); only an
        ``s3fs.S3FileSystem`` qualifies.
    path : str
        The object's path on the target.
    etag : str or None
        The ETag the object had when opened (sent as ``If-Match``).
    http : callable
        Returns the HTTP filesystem to read with (created on first use).
    fallback : callable
        Reads ranges through the target filesystem (when signing cannot serve).
    """
    if not signable(target()):
        return None
    return SignedRanges(target, path, etag, http, fallback)


def signable(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ranged reads of ``fs`` can go through signed URLs (an s3fs target, plain)."""
    return is_instance(fs, "s3fs", "S3FileSystem") and _plain_requests(fs)


def timeouts(fs: Any) -> tuple[float, float]:
    """``(connect, read)`` timeouts of the target's botocore client, in seconds.

    A signed read waits no longer than s3fs would before it fails (and goes back to
    s3fs, whose retries then apply); aiohttp's own default is five minutes in all.
    """
    config = getattr(fs, "config_kwargs", None) or {}
    connect = config.get("connect_timeout", getattr(fs, "connect_timeout", 5))
    read = config.get("read_timeout", getattr(fs, "read_timeout", 15))
    return float(connect), float(read)


async def http_client(
    limit: int = POOL, connect: float = 5.0, read: float = 15.0, **kwargs: Any
) -> Any:
    """The aiohttp session of signed reads (fsspec's ``get_client``).

    ``limit`` connections; ``connect`` and ``read`` are the socket timeouts (s).
    """
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
    connector = aiohttp.TCPConnector(limit=limit)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, **kwargs)


def _plain_requests(fs: Any) -> bool:
    """Whether a GET of a presigned URL by aiohttp is the request s3fs would make."""
    if getattr(fs, "req_kw", None) or getattr(fs, "s3_additional_kwargs", None):
        return False  # requester pays, SSE-C keys...: headers a presigned URL lacks
    config = getattr(fs, "config_kwargs", None) or {}
    client = getattr(fs, "client_kwargs", None) or {}
    return not any(config.get(k) for k in _UNSAFE_CONFIG) and not any(
        k in client for k in _UNSAFE_CLIENT
    )


class SignedRanges:
    """Read ranges of one S3 object by HTTP, from a URL signed once by the target's client.

    Parameters
    ----------
    target : callable
        Returns the target ``s3fs.S3FileSystem`` (it signs the URL).
    path : str
        The object's path on the target.
    etag : str or None
        The ETag of the object when opened; sent as ``If-Match`` on every GET.
    http : callable
        Returns the :class:`~fsspec.implementations.http.HTTPFileSystem` to read with.
    fallback : callable
        Reads ranges through the target filesystem.

    Attributes
    ----------
    active : bool
        False once the reads went back to the target for good.
    transient_failures : int
        Batches that had a transient failure the retries on the URL did not overcome
        (their failed ranges read by the target).
    retries : int
        Ranges read again on the URL after a transient failure.
    """

    def __init__(
        self,
        target: Callable[[], Any],
        path: str,
        etag: str | None,
        http: Callable[[], fsspec.AbstractFileSystem],
        fallback: Fallback,
    ) -> None:
        self._target, self.path, self.etag = target, path, etag
        self._http, self._fallback = http, fallback
        self._url: str | None = None
        self._signed_at = 0.0
        self._lock = threading.Lock()
        self.active = True
        self.transient_failures = 0
        self.retries = 0
        install_redaction()  # fsspec's HTTP filesystem logs every URL it fetches
        renew_after_fork(self)

    def __repr__(self) -> str:
        state = "active" if self.active else "reads by the target"
        return f"<SignedRanges {self.path!r}: {state}, {self.transient_failures} transient>"

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    @property
    def fs(self) -> Any:
        """The target filesystem."""
        return self._target()

    def url(self, again: bool = False) -> str:
        """The presigned URL (signed on first use, after half its life, or when asked)."""
        with self._lock:
            stale = time.monotonic() - self._signed_at > EXPIRES / 2
            if self._url is None or again or stale:
                self._url = self.fs.url(self.path, expires=EXPIRES)
                self._signed_at = time.monotonic()
            return self._url

    def __call__(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of ``ranges`` (``(start, stop)``, stop exclusive), in order."""
        ranges = list(ranges)
        if not self.active or not ranges:
            return self._fallback(ranges)
        try:
            url = self.url()
        except Exception as exc:  # signing failed (credentials...): the target says it its way
            self.active = False
            _log.debug("%s: not signed (%s): reading through the target", self.path, reason(exc))
            return self._fallback(ranges)
        if proxied(url):  # botocore would go through the proxy: so must we, by s3fs
            self.active = False
            _log.debug("%s: a proxy is configured: reading through the target", self.path)
            return self._fallback(ranges)
        out = self._get(ranges, url)
        failed = [k for k, data in enumerate(out) if not _complete(data, ranges[k])]
        if failed and all(http_status(out[k]) == 403 for k in failed):  # expired: sign again
            _log.debug("%s: signed URL refused (HTTP 403): signing it again", self.path)
            url = self.url(again=True)
            again = self._get([ranges[k] for k in failed], url)
            for k, data in zip(failed, again, strict=True):
                out[k] = data
            failed = [k for k in failed if not _complete(out[k], ranges[k])]
        if failed:  # transient (a 5xx, a body cut short...): read again on the URL
            again, retried = retry_ranges(
                lambda some: self._get(some, url),
                [ranges[k] for k in failed],
                [out[k] for k in failed],
                transient=_transient,
                together=True,  # a failure that says something of the URL: to the target
            )
            self.retries += retried
            for k, data in zip(failed, again, strict=True):
                out[k] = data
            failed = [k for k in failed if not isinstance(out[k], bytes)]
        if failed:
            transient = all(_transient(out[k]) for k in failed)
            self.transient_failures += transient  # the URL is fine: only these go to s3fs
            if not transient or self.transient_failures >= TRANSIENT_LIMIT:
                self.active = False  # the target's own client from now on
            _log.debug(
                "%s: %d range(s) failed on the signed URL (%s): read through the target%s",
                self.path,
                len(failed),
                reason(out[failed[0]]),
                "" if self.active else ", from now on",
            )
            for k, data in zip(failed, self._fallback([ranges[k] for k in failed]), strict=True):
                out[k] = data  # its retries apply, and it raises its own errors
        return out

    def stream(self, ranges: Sequence[tuple[int, int]], sink: Sink) -> Future[None] | None:
        """Start GETs of ``ranges`` on the URL whose bodies go to ``sink`` as they arrive
        (:func:`~hdfsspec.io.stream.stream_ranges`, with ``If-Match``), or None where
        the reads go elsewhere (to the target, or through a proxy): the caller reads
        them the usual way then, as it reads what a failed stream left."""
        if not self.active or not ranges:
            return None
        try:
            url = self.url()
        except Exception:  # signing failed: __call__ says how, on the caller's usual read
            return None
        if proxied(url):
            return None
        headers = {"If-Match": self.etag} if self.etag else {}
        return stream_ranges(self._http(), url, ranges, headers, sink)

    def _get(self, ranges: list[tuple[int, int]], url: str) -> list[Any]:
        """One concurrent round of ranged GETs; failures are returned, not raised."""
        headers = {"If-Match": self.etag} if self.etag else {}
        out = self._http().cat_ranges(
            [url] * len(ranges),
            [a for a, _ in ranges],
            [b for _, b in ranges],
            on_error="return",
            headers=headers,
        )
        for k, data in enumerate(out):
            if http_status(data) == 412:
                a, b = ranges[k]
                raise ObjectChangedError(
                    f"the object was replaced while being read (ETag {self.etag} no longer "
                    f"matches) at bytes {a}-{b}",
                    path=self.fs.unstrip_protocol(self.path),
                    offset=a,
                )
        return list(out)


def proxied(url: str) -> bool:
    """Whether the environment (``HTTPS_PROXY``...) routes ``url`` through a proxy.

    botocore honours these variables; aiohttp would only with ``trust_env``, which
    looks them up again on every request (a third of the CPU saved), so a proxied
    endpoint is read through s3fs instead.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _transient(error: Any) -> bool:
    """Whether a failed GET says nothing of the URL: a 5xx, 408 or 429, a dropped
    connection, a timeout, a body cut short (:func:`hdfsspec.io.retry.is_transient`)."""
    return is_transient(error)


def _complete(data: Any, span: tuple[int, int]) -> bool:
    """Whether ``data`` is the bytes of ``span``, not a failure nor a body cut short."""
    return isinstance(data, bytes) and len(data) >= span[1] - span[0]

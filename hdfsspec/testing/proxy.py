"""A shaping HTTP proxy on loopback: round-trip latency, link bandwidth, per-request overhead.

Put it in front of any loopback storage server (moto's S3, the GCS emulator,
Azurite, :class:`~hdfsspec.testing.RangeHTTPServer`) and point the client's
endpoint at :attr:`ShapingProxy.url`. Every request waits one round trip plus
the per-request overhead before its response starts; response bodies share one
link of ``bandwidth`` bytes per second (concurrent responses split it). Requests
and body bytes are counted in :attr:`ShapingProxy.log`.

``local_objects`` maps request paths to local files that the proxy serves
itself for GET (with Range), reading only the range asked for; everything else
goes to the upstream server. Benchmarks use it for objects of hundreds of MB,
because moto reads the whole object into memory for every ranged GET.

The proxy is one asyncio event loop in a thread of its own: a round of hundreds
of concurrent ranged GETs costs it a few milliseconds of CPU, as a real store
answers them in parallel (a thread per connection under ``http.server`` cost
about 0.4 ms a request, serialized by the GIL, and made such rounds look slower
than they are). Requests to the upstream server run in a thread pool, each
client connection on an upstream connection of its own.

``faults`` (a :class:`~hdfsspec.testing.faults.FaultPlan`) spoils responses: 5xx and
403 answers, bodies reset or cut short, stalls (see :mod:`hdfsspec.testing.faults`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hdfsspec.testing.faults import FaultPlan, refuse, spoil
from hdfsspec.testing.servers import RequestLog

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ShapingProxy"]

_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_SUFFIX = re.compile(r"bytes=-(\d+)$")  # the last N bytes
_CHUNK = 256 * 1024
_BURST = 0.004
"""Seconds of link time a response may send at once to catch up with the schedule."""
_BIG_READ = 2**20
"""Local reads larger than this run in the thread pool, off the event loop."""
_HEAD_LIMIT = 2**20
"""Longest request head (request line and headers) accepted, in bytes."""


class _Request:
    """One parsed request: method, target (path and query), headers in order, body."""

    __slots__ = ("body", "headers", "method", "target", "version")

    def __init__(self, head: bytes) -> None:
        line, *fields = head.decode("latin-1").split("\r\n")
        self.method, self.target, self.version = line.split(" ", 2)
        self.headers: list[tuple[str, str]] = []
        for field in fields:
            if field:
                name, _, value = field.partition(":")
                self.headers.append((name.strip(), value.strip()))
        self.body: bytes | None = None

    def get(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), default)

    @property
    def path(self) -> str:
        return self.target.split("?")[0]

    @property
    def keep_alive(self) -> bool:
        connection = self.get("Connection").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class ShapingProxy:
    """Reverse proxy to ``upstream`` with latency, bandwidth and overhead.

    Parameters
    ----------
    upstream : str
        ``http://127.0.0.1:PORT`` of the server behind the proxy.
    rtt : float
        Round-trip time in seconds added to every request.
    bandwidth : float, optional
        Link bandwidth in bytes per second shared by all responses (unlimited if None).
    overhead : float
        Extra seconds per request (server-side processing time).
    local_objects : dict of str to str, optional
        Request path -> local file served directly for GET.
    lifetime : float
        Seconds after which the proxy stops by itself.
    faults : FaultPlan, optional
        Faults injected into the responses (also settable later as :attr:`faults`).
    """

    def __init__(
        self,
        upstream: str,
        *,
        rtt: float = 0.0,
        bandwidth: float | None = None,
        overhead: float = 0.0,
        local_objects: dict[str, str] | None = None,
        lifetime: float = 1800.0,
        faults: FaultPlan | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the proxy only forwards to loopback servers, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.rtt, self.bandwidth, self.overhead = rtt, bandwidth, overhead
        self.local_objects = dict(local_objects or {})
        self.lifetime = lifetime
        self.deadline: float | None = None
        """``time.monotonic()`` after which requests get 403 (ends a benchmark cell)."""
        self.refuse = 0
        """Requests still to refuse, one each, from the next on (tests of retries)."""
        self.refuse_status = 403
        """The status they are refused with (403 Forbidden, 503 Slow Down ...)."""
        self.log = RequestLog()
        self.faults = faults
        """The :class:`~hdfsspec.testing.faults.FaultPlan` consulted per response, if any."""
        self._link_free_at = 0.0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._port = 0

    @property
    def url(self) -> str:
        """Endpoint URL of the proxy."""
        assert self._loop is not None, "proxy not started"
        return f"http://127.0.0.1:{self._port}"

    # -- life cycle -----------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._pool = concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="proxy-up")
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(30) or self._server is None:
            self.stop()
            raise RuntimeError("the shaping proxy did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._connection, "127.0.0.1", 0, backlog=1024, limit=_HEAD_LIMIT
                )
            )
            self._port = self._server.sockets[0].getsockname()[1]
        finally:
            ready.set()
        loop.call_later(self.lifetime, self._halt)
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    def _halt(self) -> None:
        """In the loop: stop listening, drop the connections, stop the loop."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        assert self._loop is not None
        self._loop.stop()

    def stop(self) -> None:
        """Stop serving and release the port."""
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            if threading.current_thread() is thread:
                self._halt()
                return
            loop.call_soon_threadsafe(self._halt)
            thread.join(10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- shaping --------------------------------------------------------------------------
    async def _wait_round_trip(self) -> None:
        delay = self.rtt + self.overhead
        if delay > 0:
            await asyncio.sleep(delay)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write ``data`` at the link's pace."""
        view = memoryview(data)
        for i in range(0, len(view), _CHUNK):
            chunk = view[i : i + _CHUNK]
            if self.bandwidth:
                now = time.monotonic()
                # the link's schedule is kept across chunks: time lost to the loop's
                # timer (a millisecond or two per sleep) is made up, up to _BURST late
                start = max(now - _BURST, self._link_free_at)
                self._link_free_at = start + len(chunk) / self.bandwidth
                wait = self._link_free_at - now
                if wait > _BURST / 2:
                    await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    def _refused(self) -> int:
        """The status to refuse the next request with, or 0 to serve it."""
        with self._lock:
            if self.refuse > 0:
                self.refuse -= 1
                return self.refuse_status
        return 403 if self.deadline is not None and time.monotonic() > self.deadline else 0

    # -- serving --------------------------------------------------------------------------
    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve the requests of one client connection, in turn, until it closes."""
        self._writers.add(writer)
        upstream: list[http.client.HTTPConnection | None] = [None]
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                request = _Request(head[:-4])
                if request.get("Expect").lower() == "100-continue":  # as http.server does
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.body = await _read_body(reader, request)
                if not await self._respond(request, writer, upstream):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:  # the proxy stops: end quietly (the loop is closing)
            return
        finally:
            self._writers.discard(writer)
            if upstream[0] is not None:
                upstream[0].close()
            writer.close()

    async def _respond(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        upstream: list[http.client.HTTPConnection | None],
    ) -> bool:
        """Answer one request; return whether the connection stays open."""
        status = self._refused()
        if status:
            self.log.add(request.method, request.target, None, None, 0)
            writer.write(_head(status, "refused", [("Content-Length", "0")]))
            await writer.drain()
            return request.keep_alive
        filename = self.local_objects.get(request.path)
        if request.method == "GET" and filename is not None:  # (no faults: benchmarks' objects)
            await self._local_get(request, filename, writer)
            return request.keep_alive
        plan = self.faults
        strike = None if plan is None else plan.choose(request.method, request.target)
        match = _RANGE.match(request.get("Range"))
        entry = (request.method, request.target, int(match.group(1)) if match else None)
        if strike is not None and strike.kind in ("status", "forbid"):
            await self._wait_round_trip()  # an error answer, never forwarded
            await refuse(strike, self.log, entry, writer, _head)
            return request.keep_alive
        assert self._loop is not None
        try:
            status, reason, headers, data = await self._loop.run_in_executor(
                self._pool, self._forward, upstream, request
            )
        except (http.client.HTTPException, OSError):
            if strike is not None:
                strike.spare()
            writer.write(_head(502, "Bad Gateway", [("Content-Length", "0")]))
            await writer.drain()
            return False
        await self._wait_round_trip()
        head = request.method == "HEAD"
        fields = [
            (k, v)
            for k, v in headers
            if k.lower() not in _HOP and (head or k.lower() != "content-length")
        ]
        if not head:
            fields.append(("Content-Length", str(len(data))))
        if strike is not None:  # a fault of the body: sent spoilt (an error, a HEAD: whole)
            response = (status, reason, fields, data)
            stays = await spoil(strike, self.log, entry, writer, _head, self._send, response)
            if stays is not None:
                return stays and request.keep_alive
        writer.write(_head(status, reason, fields))
        self.log.add(*entry, None, len(data))
        if not head:
            await self._send(writer, data)
        else:
            await writer.drain()
        return request.keep_alive

    async def _local_get(self, request: _Request, filename: str, writer: Any) -> None:
        """Serve a GET of a local object, reading only the range asked for."""
        size = os.path.getsize(filename)
        match = _RANGE.match(request.get("Range"))
        suffix = _SUFFIX.match(request.get("Range"))
        start, stop = 0, size
        if match:
            start = int(match.group(1))
            stop = min(size, int(match.group(2)) + 1) if match.group(2) else size
        elif suffix:  # S3 answers a suffix range with the object's last N bytes
            start = max(0, size - int(suffix.group(1)))
        length = max(0, stop - start)
        if length > _BIG_READ:
            assert self._loop is not None
            body = await self._loop.run_in_executor(self._pool, _pread, filename, start, length)
        else:
            body = _pread(filename, start, length)
        await self._wait_round_trip()
        fields = [
            ("Content-Length", str(len(body))),
            ("Accept-Ranges", "bytes"),
            ("ETag", f'"{int(os.path.getmtime(filename))}-{size}"'),
        ]
        ranged = bool(match or suffix)
        if ranged:
            fields.insert(0, ("Content-Range", f"bytes {start}-{stop - 1}/{size}"))
        writer.write(_head(206 if ranged else 200, "Partial Content" if ranged else "OK", fields))
        self.log.add("GET", request.target, start, stop, len(body))  # before the client has it
        await self._send(writer, body)

    def _forward(
        self, upstream: list[http.client.HTTPConnection | None], request: _Request
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """In the pool: send the request upstream on the client connection's own connection."""
        headers = {k: v for k, v in request.headers if k.lower() not in _HOP}
        for attempt in (0, 1):
            conn = upstream[0]
            if conn is None:
                conn = upstream[0] = http.client.HTTPConnection(*self.upstream, timeout=120)
            try:
                conn.request(request.method, request.target, body=request.body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.reason, resp.getheaders(), resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                upstream[0] = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


async def _read_body(reader: asyncio.StreamReader, request: _Request) -> bytes | None:
    """The request's body: ``Content-Length`` bytes, or its chunks joined."""
    if "chunked" in request.get("Transfer-Encoding").lower():
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(request.get("Content-Length") or 0)
    return await reader.readexactly(length) if length else None


def _head(status: int, reason: str, fields: list[tuple[str, str]]) -> bytes:
    """A response's status line and header fields."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in fields), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _pread(filename: str, start: int, length: int) -> bytes:
    with open(filename, "rb") as fh:
        fh.seek(start)
        return fh.read(length)

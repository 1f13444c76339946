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
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from hdfsspec.testing.servers import LoopbackHTTPServer, RequestLog

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
_CHUNK = 256 * 1024


class ShapingProxy(LoopbackHTTPServer):
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
        """Requests still to refuse with 403, one each, from the next on (tests of retries)."""
        self.log = RequestLog()
        self._link_free_at = 0.0
        self._link_lock = threading.Lock()

    @property
    def url(self) -> str:
        """Endpoint URL of the proxy."""
        assert self._server is not None, "proxy not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- shaping ------------------------------------------------------------------------
    def _wait_round_trip(self) -> None:
        delay = self.rtt + self.overhead
        if delay > 0:
            time.sleep(delay)

    def _send(self, wfile: Any, data: bytes) -> None:
        """Write ``data`` at the link's pace."""
        for i in range(0, len(data), _CHUNK):
            chunk = data[i : i + _CHUNK]
            if self.bandwidth:
                with self._link_lock:
                    now = time.monotonic()
                    start = max(now, self._link_free_at)
                    self._link_free_at = start + len(chunk) / self.bandwidth
                    wait = self._link_free_at - now
                if wait > 0:
                    time.sleep(wait)
            wfile.write(chunk)

    def _forward(
        self, handler: Any, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> http.client.HTTPResponse:
        """Send the request upstream on the client connection's own upstream connection."""
        for attempt in (0, 1):
            if handler.upstream_conn is None:
                handler.upstream_conn = http.client.HTTPConnection(*self.upstream, timeout=120)
            try:
                handler.upstream_conn.request(method, path, body=body, headers=headers)
                return handler.upstream_conn.getresponse()
            except (http.client.HTTPException, OSError):
                handler.upstream_conn.close()
                handler.upstream_conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _refused(self) -> bool:
        with self._link_lock:
            if self.refuse > 0:
                self.refuse -= 1
                return True
            return False

    # -- server -------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream_conn: http.client.HTTPConnection | None = None

            def log_message(self, *args: Any) -> None:
                pass

            def finish(self) -> None:
                super().finish()
                if self.upstream_conn is not None:
                    self.upstream_conn.close()

            def _local_get(self, filename: str) -> None:
                size = os.path.getsize(filename)
                match = _RANGE.match(self.headers.get("Range", ""))
                start, stop = 0, size
                if match:
                    start = int(match.group(1))
                    stop = min(size, int(match.group(2)) + 1) if match.group(2) else size
                with open(filename, "rb") as fh:
                    fh.seek(start)
                    body = fh.read(max(0, stop - start))
                proxy._wait_round_trip()
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{int(os.path.getmtime(filename))}-{size}"')
                self.end_headers()
                proxy.log.add("GET", self.path, start, stop, len(body))  # before the client has it
                proxy._send(self.wfile, body)

            def _proxy(self) -> None:
                if proxy._refused() or (
                    proxy.deadline is not None and time.monotonic() > proxy.deadline
                ):
                    proxy.log.add(self.command, self.path, None, None, 0)
                    self.send_response(403, "refused")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = self.path.split("?")[0]
                if self.command == "GET" and path in proxy.local_objects:
                    self._local_get(proxy.local_objects[path])
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                resp = proxy._forward(self, self.command, self.path, headers, body)
                data = resp.read()
                proxy._wait_round_trip()
                self.send_response(resp.status, resp.reason)
                head = self.command == "HEAD"
                for key, value in resp.getheaders():
                    if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                match = _RANGE.match(self.headers.get("Range", ""))
                start = int(match.group(1)) if match else None
                proxy.log.add(self.command, self.path, start, None, len(data))
                if not head:
                    proxy._send(self.wfile, data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _proxy

        return Handler

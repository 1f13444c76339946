"""Real storage servers on loopback for tests and benchmarks.

Each server binds ``127.0.0.1`` on a free port, runs in a daemon thread, stops
on leaving its ``with`` block and, as a safety net, by itself after
``lifetime`` seconds.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LoopbackHTTPServer", "RangeHTTPServer", "RequestLog", "moto_s3"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class RequestLog:
    """Requests seen by a server: ``(method, path, start, stop, bytes_sent)``.

    ``faults`` counts the faults a :class:`~hdfsspec.testing.faults.FaultPlan` made the
    proxy inject, by kind (the spoilt responses are entries too).
    """

    entries: list[tuple[str, str, int | None, int | None, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    faults: Counter[str] = field(default_factory=Counter)

    def add(self, *entry: Any) -> None:
        with self.lock:
            self.entries.append(entry)

    def fault(self, kind: str) -> None:
        """Count one injected fault of ``kind``."""
        with self.lock:
            self.faults[kind] += 1

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.faults.clear()

    def gets(self, path: str | None = None) -> list[tuple[str, str, int | None, int | None, int]]:
        """The GET requests (optionally of one path)."""
        return [e for e in self.entries if e[0] == "GET" and (path is None or e[1] == path)]

    @property
    def requests(self) -> int:
        """Number of GET requests (data requests; HEAD excluded)."""
        return len(self.gets())

    @property
    def bytes(self) -> int:
        """Body bytes sent by GET requests."""
        return sum(e[4] for e in self.gets())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # the default listen backlog (5) drops the SYNs of a burst of new connections, which
    # the client resends after a 1 s timeout: a real object store has no such limit
    request_queue_size = 1024


class LoopbackHTTPServer:
    """Base of the loopback servers: a threaded HTTP server on a free 127.0.0.1 port.

    It serves in a daemon thread from ``__enter__``, and stops on ``__exit__`` or,
    as a safety net, by itself after ``lifetime`` seconds. Subclasses give
    ``_handler()``.
    """

    lifetime: float = 900.0
    _server: ThreadingHTTPServer | None = None
    _timer: threading.Timer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._server = _Server(("127.0.0.1", 0), self._handler())
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RangeHTTPServer(LoopbackHTTPServer):
    """A threaded HTTP server of in-memory objects with single-range ``Range`` support.

    Parameters
    ----------
    files : dict of str to bytes, optional
        Objects served at ``/<name>``; more can be added with :meth:`put`, or by a
        client's PUT (with ``Content-Length``).
    ignore_range : bool
        If true, answer every GET with the whole object (status 200), as some
        servers do; clients must still read correctly.
    etags : {"strong", "weak", "none"}
        The ETag sent with HEAD and GET answers (an object's digest). A GET with
        ``If-Match`` naming another ETag (or any ``If-Match`` when ``refuse_if_match``)
        is answered 412, as S3, GCS, nginx and Apache do.
    refuse_if_match : bool
        Answer 412 to every ``If-Match``, as a misconfigured proxy might.
    required_headers : dict of str to str, optional
        Headers every HEAD and GET must carry (an ``Authorization`` token...), else 403.
    lifetime : float
        Seconds after which the server stops by itself.
    """

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        *,
        ignore_range: bool = False,
        etags: str = "strong",
        refuse_if_match: bool = False,
        required_headers: dict[str, str] | None = None,
        lifetime: float = 900.0,
    ) -> None:
        self.required_headers = dict(required_headers or {})
        self.files: dict[str, bytes] = dict(files or {})
        self.ignore_range = ignore_range
        self.etags, self.refuse_if_match = etags, refuse_if_match
        self._digests: dict[int, tuple[bytes, str]] = {}  # id -> (object, its digest)
        self.conditional = 0  # GETs that carried If-Match (counted as they are logged)
        self.refused = 0  # of which answered 412
        self.lifetime = lifetime
        self.log = RequestLog()

    def put(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/name`` and return its URL."""
        self.files[name.lstrip("/")] = data
        return self.url(name)

    def conditional_counts(self) -> tuple[int, int, int]:
        """``(GETs with If-Match, of which refused, all GETs)``, taken together (a read
        still in flight cannot fall between them)."""
        with self.log.lock:
            return self.conditional, self.refused, len(self.log.gets())

    def etag(self, data: bytes) -> str | None:
        """The ETag sent for ``data`` (None when ``etags="none"``)."""
        if self.etags == "none":
            return None
        held = self._digests.get(id(data))
        if held is None or held[0] is not data:  # digested once per object, not per GET
            digest = f'"{hashlib.blake2b(data, digest_size=8).hexdigest()}"'
            if len(self._digests) >= len(self.files):  # forget the objects replaced
                served = {id(d) for d in self.files.values()}
                self._digests = {k: v for k, v in self._digests.items() if k in served}
            held = self._digests[id(data)] = (data, digest)
        return "W/" + held[1] if self.etags == "weak" else held[1]

    def url(self, name: str = "") -> str:
        assert self._server is not None, "server not started"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/{name.lstrip('/')}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _object(self) -> bytes | None:
                data = server.files.get(self.path.split("?")[0].lstrip("/"))
                required = server.required_headers.items()
                if data is not None and any(self.headers.get(k) != v for k, v in required):
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return data

            def do_HEAD(self) -> None:
                data = self._object()
                server.log.add("HEAD", self.path, None, None, 0)
                if data is None:
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
                self._etag(data)
                self.end_headers()

            def _etag(self, data: bytes) -> None:
                etag = server.etag(data)
                if etag is not None:
                    self.send_header("ETag", etag)

            def _log_get(self, start: Any, stop: Any, sent: int, refused: bool = False) -> None:
                """Log a GET (before answering it) and count its If-Match, in one step."""
                with server.log.lock:
                    server.conditional += "If-Match" in self.headers
                    server.refused += refused
                    server.log.entries.append(("GET", self.path, start, stop, sent))

            def _precondition_failed(self, data: bytes) -> bool:
                wanted = self.headers.get("If-Match")
                if wanted is None or wanted.strip() == "*":
                    return False
                etag = server.etag(data)
                strong = etag is not None and not etag.startswith("W/")
                if strong and not server.refuse_if_match and wanted.strip() == etag:
                    return False
                self._log_get(None, None, 0, refused=True)
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.files[self.path.split("?")[0].lstrip("/")] = body
                server.log.add("PUT", self.path, None, None, 0)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                data = self._object()
                if data is None:
                    self._log_get(None, None, 0)
                    return
                if self._precondition_failed(data):  # logged there, before it answers
                    return
                match = _RANGE.match(self.headers.get("Range", ""))
                start, stop, status = 0, len(data), 200
                if match and not server.ignore_range:
                    first, last = match.groups()
                    if first:
                        start = int(first)
                        stop = min(len(data), int(last) + 1) if last else len(data)
                    else:
                        start = max(0, len(data) - int(last))
                    if start >= len(data):
                        self._log_get(start, stop, 0)
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:stop]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
                self._etag(data)
                # logged before the body goes: a client that has it finds it in the log
                self._log_get(start, stop, len(body))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@contextmanager
def moto_s3(lifetime: float = 900.0) -> Iterator[str]:
    """Run moto's S3 in server mode on loopback; yield its endpoint URL.

    Needs ``moto[server]``. The server stops on exit, or after ``lifetime`` seconds.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    timer = threading.Timer(lifetime, server.stop)
    timer.daemon = True
    timer.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        timer.cancel()
        server.stop()

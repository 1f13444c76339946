"""moto's S3 and the shaping proxy in a process of their own.

A real object store spends none of the client's CPU. In the benchmark process, moto
and the proxy would: their request handling runs in threads that take the client's
GIL, so every request would cost the client the server's work too, and methods that
make many requests would be measured slower than they are. :class:`ServerProcess`
runs both in a child process (on the machine's other core) and gives the parent the
proxy's URL, its request log and its cell deadline over a pipe.

The child stops when the parent closes the pipe or exits, and by itself after its
``lifetime`` (the servers' own safety nets).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["ServerProcess", "settle"]

LIFETIME = 3600.0
"""Seconds after which the servers stop by themselves."""


def _serve(conn: Connection, rtt: float, bandwidth: float, objects: dict[str, str]) -> None:
    """Child: start moto and the proxy, answer the parent's commands until EOF."""
    import logging

    from hdfsspec.testing import ShapingProxy, moto_s3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log
    with (
        moto_s3(lifetime=LIFETIME) as endpoint,
        ShapingProxy(
            endpoint, rtt=rtt, bandwidth=bandwidth, local_objects=objects, lifetime=LIFETIME
        ) as proxy,
    ):
        conn.send((endpoint, proxy.url))
        while True:
            try:
                command, arg = conn.recv()
            except EOFError:
                return
            if command == "entries":
                with proxy.log.lock:
                    conn.send(list(proxy.log.entries))
            elif command == "clear":
                proxy.log.clear()
                conn.send(None)
            elif command == "deadline":
                proxy.deadline = arg
                conn.send(None)
            else:
                conn.send(ValueError(f"unknown command {command!r}"))


class _Log:
    """The proxy's :class:`~hdfsspec.testing.RequestLog`, seen from the parent."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server

    @property
    def entries(self) -> list[tuple[str, str, int | None, int | None, int]]:
        return self._server.call("entries")

    def clear(self) -> None:
        self._server.call("clear")


class ServerProcess:
    """moto's S3 behind a :class:`~hdfsspec.testing.ShapingProxy`, in a child process.

    Parameters
    ----------
    rtt, bandwidth : float
        The proxy's round trip (s) and link bandwidth (bytes/s).
    local_objects : dict of str to str
        Request path -> local file the proxy serves itself for GET.

    Attributes
    ----------
    endpoint : str
        moto's own URL (no shaping), for uploads.
    url : str
        The proxy's URL.
    log
        ``entries`` (the requests since the last ``clear()``) and ``clear()``.
    """

    def __init__(self, rtt: float, bandwidth: float, local_objects: dict[str, str]) -> None:
        self._args = (rtt, bandwidth, dict(local_objects))
        self._conn: Connection | None = None
        self._process: Any = None
        self.endpoint = self.url = ""
        self.log = _Log(self)
        self._deadline: float | None = None

    def __enter__(self) -> ServerProcess:
        ctx = mp.get_context("spawn")  # no threads or event loops inherited
        parent, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, *self._args), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(120):
            self.__exit__()
            raise RuntimeError("the server process did not start within 120 s")
        self.endpoint, self.url = parent.recv()
        return self

    def call(self, command: str, arg: Any = None) -> Any:
        """Send one command to the child and return its answer."""
        assert self._conn is not None, "server process not started"
        self._conn.send((command, arg))
        out = self._conn.recv()
        if isinstance(out, Exception):
            raise out
        return out

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` after which requests get 403 (Linux: one clock for all)."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.call("deadline", value)
        self._deadline = value

    def __exit__(self, *exc: Any) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)
            self._process = None


QUIET = 0.1
"""Seconds without a new request after which a closed method's requests are all in."""
SETTLE = 2.0
"""The longest wait for them."""


def settle(proxy: ServerProcess) -> list[Any]:
    """The proxy's log once it has been quiet for ``QUIET`` s (at most ``SETTLE`` s).

    Requests a method still makes after its work (reads ahead in flight when the image
    is closed) belong to its cell: without this wait they were counted in the next one
    (a local copy "making" 2 requests after hdfsspec's region). They count in the
    requests and bytes, not in the seconds, and ``Cell.after`` says how many there were.
    """
    entries = list(proxy.log.entries)
    end, since = time.monotonic() + SETTLE, time.monotonic()
    while time.monotonic() < end:
        time.sleep(QUIET / 4)
        now = list(proxy.log.entries)
        if len(now) != len(entries):
            entries, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET:
            break
    return entries

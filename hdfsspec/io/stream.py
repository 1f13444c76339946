"""Ranged GETs whose bodies are handed over as they arrive, not once they are whole.

A window of frames fetched ahead of a reader is a few MB: fetched whole, the reader
waits for its last byte before it gets its first frame, and the link idles while the
reader catches up. :func:`stream_ranges` starts the GETs of some ranges on the event
loop of fsspec's :class:`~fsspec.implementations.http.HTTPFileSystem` and hands each
body's bytes to a sink as they come (in the loop's thread, in order within a range),
so that a frame is served as soon as its own bytes are in.

It is the transport only: no retry, no fallback. A range that fails (any status but
206 for the range asked, a dropped connection, a body cut short) ends with the error
handed to the sink; the caller reads what is left of it the usual way (with retries,
the version pin and the fallbacks of :mod:`hdfsspec.io.signed`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hdfsspec.io.retry import ShortRead

__all__ = ["Sink", "StreamRefused", "stream_ranges"]

Sink = Callable[[int, "bytes | BaseException | None"], None]
"""``sink(k, chunk)``: the next bytes of range ``k``; ``None`` once the range is complete,
an exception if it failed (nothing more comes for it then)."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/")


class StreamRefused(Exception):
    """The server did not answer a ranged GET with the range asked (206 and its
    ``Content-Range``): ``status`` is its HTTP status."""

    def __init__(self, status: int, start: int) -> None:
        super().__init__(f"HTTP {status} for a ranged GET from byte {start}")
        self.status, self.start = status, start

    def __reduce__(self) -> Any:
        return type(self), (self.status, self.start)


def stream_ranges(
    fs: Any,
    url: str,
    ranges: Sequence[tuple[int, int]],
    headers: Mapping[str, str],
    sink: Sink,
) -> concurrent.futures.Future[None]:
    """Start ranged GETs of ``url``, all at once, handing their bytes to ``sink``.

    Parameters
    ----------
    fs : fsspec.implementations.http.HTTPFileSystem
        Its session (and its event loop, its ``kwargs``) make the requests.
    url : str
        The object's URL (used as the filesystem encodes it).
    ranges : sequence of (int, int)
        ``(start, stop)`` byte ranges, stop exclusive, each non-empty.
    headers : mapping
        Headers of every GET (``If-Match``...), besides ``Range``.
    sink : callable
        See :data:`Sink`; called in the event loop's thread. Each range ends with
        exactly one call with ``None`` or an exception.

    Returns
    -------
    concurrent.futures.Future
        Done once every range has ended; cancelling it ends those still running
        (each with the ``CancelledError`` handed to the sink).
    """

    async def all_ranges() -> None:
        each = (_one(fs, url, k, a, b, headers, sink) for k, (a, b) in enumerate(ranges))
        await asyncio.gather(*each)

    return asyncio.run_coroutine_threadsafe(all_ranges(), fs.loop)


async def _one(
    fs: Any, url: str, k: int, start: int, stop: int, headers: Mapping[str, str], sink: Sink
) -> None:
    """Stream range ``k`` (``start``-``stop``) into ``sink``; its end or failure too."""
    got = 0
    try:
        kw = dict(fs.kwargs)
        asked = {**kw.pop("headers", {}), **headers, "Range": f"bytes={start}-{stop - 1}"}
        session = await fs.set_session()
        async with session.get(fs.encode_url(url), headers=asked, **kw) as response:
            if response.status != 206 or not _starts_at(response.headers, start):
                raise StreamRefused(response.status, start)
            async for chunk in response.content.iter_any():
                take = chunk[: stop - start - got]
                if take:
                    got += len(take)
                    sink(k, take)
                if got >= stop - start:
                    break
        if got < stop - start:
            raise ShortRead(start, stop, got)
    except BaseException as error:
        sink(k, error)
        if isinstance(error, asyncio.CancelledError):
            raise
        return
    sink(k, None)


def _starts_at(headers: Mapping[str, str], start: int) -> bool:
    """Whether a 206's ``Content-Range`` starts at ``start``."""
    match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == start

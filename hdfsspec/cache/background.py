"""One range read in the background, for a reader that will want it soon.

The Basic Offset Table of a large slide (4 bytes a frame: 400 KB for 100,000
tiles) is often longer than the first request. The open does not need it (the
index is built when a frame is first wanted), but frames beyond the entries the
header holds do, and would wait one round trip for it. When those are most of the
frames (see :func:`hdfsspec.dicom.frame_locations.bot_beyond`), the rest of the table is read as
soon as the header shows it, and arrives while highdicom builds its frame tables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from hdfsspec._fork import renew_after_fork

__all__ = ["Ahead"]


class Ahead:
    """Read ``span`` with ``fetch`` in a daemon thread, started at once.

    Parameters
    ----------
    span : tuple of int
        ``(start, stop)`` of the bytes.
    fetch : callable
        ``fetch(start, stop) -> bytes``; its own accounting applies.
    """

    def __init__(self, span: tuple[int, int], fetch: Callable[[int, int], bytes]) -> None:
        self.span = span
        self._fetch = fetch
        self._data: bytes | None = None  # set once, by the thread, before _done
        self._done = threading.Event()
        renew_after_fork(self)
        threading.Thread(target=self._run, name="hdfsspec-ahead", daemon=True).start()

    def _run(self) -> None:
        try:
            self._data = self._fetch(*self.span)
        except BaseException:  # the reader reads again, and sees the error itself
            pass
        finally:
            self._done.set()

    def _after_fork(self) -> None:
        """In a forked child the thread does not exist: what it had read, or nothing."""
        self._done = threading.Event()
        self._done.set()

    def serve(self, start: int, stop: int) -> bytes | None:
        """The bytes when ``(start, stop)`` is this read's span and it succeeded, else None."""
        return self.result() if self.span == (start, stop) else None

    def result(self) -> bytes | None:
        """The bytes, waiting for them if needed; None if the read failed (read again).

        In a forked child a read that was still in flight gives None.
        """
        self._done.wait()
        return self._data

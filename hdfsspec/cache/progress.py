"""Progress of a long scan of the Pixel Data items (files without offset table).

A scan runs in rounds of large windows; after each round the cache reports the
position reached. What is shown depends on the ``progress`` option:

* ``None`` (default): a bar on stderr, only once a scan has run for
  :data:`DELAY` seconds (a tqdm bar when tqdm is installed, else one line of text);
* ``True``: the bar from the start; ``False``: nothing;
* an :class:`fsspec.callbacks.Callback`: ``set_size`` with the bytes to scan, then
  ``relative_update`` with the bytes of every round, as fsspec's transfers report.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TypeAlias

from fsspec.callbacks import Callback

__all__ = ["DELAY", "Progress", "ScanProgress"]

DELAY = 2.0
"""Seconds a scan runs before the default bar appears."""

Progress: TypeAlias = bool | Callback | None


class _TextBar:
    """A one-line bar on stderr, for when tqdm is not installed."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n = total, desc, 0

    def update(self, n: int) -> None:
        self.n += n
        pct = 100 * self.n / self.total if self.total else 100
        sys.stderr.write(f"\r{self.desc}: {pct:5.1f}% of {self.total / 1e6:.1f} MB")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _bar(total: int, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextBar(total, desc)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, file=sys.stderr)


class ScanProgress:
    """Reports how far one scan call has gone through ``[start, stop)``.

    Parameters
    ----------
    start, stop : int
        Byte range being scanned (the Pixel Data items).
    desc : str
        Label of the bar (the object's name).
    progress : bool, fsspec Callback or None
        See the module docstring.
    delay : float
        Seconds before the default bar appears.
    """

    def __init__(
        self, start: int, stop: int, desc: str, progress: Progress = None, delay: float = DELAY
    ) -> None:
        self.start, self.total, self.desc = start, max(0, stop - start), desc
        self._mode, self._delay = progress, 0.0 if progress is True else delay
        self._began = time.monotonic()
        self._done = 0
        self._bar: Any = None
        if isinstance(progress, Callback):
            progress.set_size(self.total)

    def update(self, position: int) -> None:
        """The scan has reached byte ``position``."""
        done = min(self.total, max(0, position - self.start))
        step, self._done = done - self._done, max(self._done, done)
        if step <= 0 or self._mode is False:
            return
        if isinstance(self._mode, Callback):
            self._mode.relative_update(step)
            return
        if self._bar is None:
            if time.monotonic() - self._began < self._delay:
                return
            self._bar = _bar(self.total, self.desc)
            step = self._done  # everything so far
        self._bar.update(step)

    def close(self) -> None:
        """The scan call returned: remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

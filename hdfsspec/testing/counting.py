"""A wrapper filesystem that counts (and optionally delays) every byte request."""

from __future__ import annotations

import threading
import time
from typing import Any

import fsspec
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

__all__ = ["CountingFileSystem"]


class CountingFileSystem(AbstractFileSystem):
    """Wrap a filesystem; count the requests and bytes of ``cat_file``, ``cat_ranges`` and reads.

    Files opened from it are plain fsspec buffered files over the target (so
    ``cache_type`` and ``block_size`` behave as on s3fs or gcsfs), each block
    fetch counted as one request. ``latency`` seconds are slept once per round
    (a ``cat_ranges`` batch counts as one round), to model a remote store.

    Parameters
    ----------
    fs : AbstractFileSystem, optional
        The target instance (else ``target_protocol`` and ``target_options``).
    latency : float
        Seconds added to each round of requests.
    """

    protocol = "counting"
    cachable = False

    def __init__(
        self,
        fs: AbstractFileSystem | None = None,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        latency: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fs = (
            fs
            if fs is not None
            else fsspec.filesystem(target_protocol or "memory", **(target_options or {}))
        )
        self.latency = latency
        self.ranges: list[tuple[str, int | None, int | None]] = []
        self.rounds = 0
        self.bytes = 0
        self._lock = threading.Lock()

    @property
    def requests(self) -> int:
        """Number of byte-range requests made so far."""
        return len(self.ranges)

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.ranges.clear()
            self.rounds = self.bytes = 0

    def _count(self, ranges: list[tuple[str, int | None, int | None]], nbytes: int) -> None:
        with self._lock:
            self.ranges.extend(ranges)
            self.rounds += 1
            self.bytes += nbytes
        if self.latency:
            time.sleep(self.latency)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        data = self.fs.cat_file(path, start=start, end=end, **kwargs)
        self._count([(path, start, end)], len(data))
        return data

    def cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: Any = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        out = self.fs.cat_ranges(paths, starts, ends, on_error=on_error, **kwargs)
        starts = starts if isinstance(starts, list) else [starts] * len(paths)
        ends = ends if isinstance(ends, list) else [ends] * len(paths)
        nbytes = sum(len(d) for d in out if isinstance(d, bytes))
        self._count(list(zip(paths, starts, ends, strict=True)), nbytes)
        return out

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Any = None,
        **kwargs: Any,
    ) -> AbstractBufferedFile:
        return _CountingFile(
            self,
            path,
            mode,
            block_size=block_size or "default",
            cache_options=cache_options,
            **kwargs,
        )

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.fs.info(path, **kwargs)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        return self.fs.ls(path, detail=detail, **kwargs)

    def _strip_protocol(self, path: Any) -> Any:
        path = str(path)
        if path.startswith("counting://"):
            path = path[len("counting://") :]
        return self.fs._strip_protocol(path)

    def unstrip_protocol(self, name: str) -> str:
        return self.fs.unstrip_protocol(name)


class _CountingFile(AbstractBufferedFile):
    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start=start, end=end)

"""Any readable, seekable binary file object, as the target of a ``dicom`` filesystem.

highdicom reads the file object it is given (a GCS ``BlobReader``, a ``smart_open``
file, an :class:`io.BytesIO`, a wrapper of one's own) with about four small reads a
frame. Under the ``dicom`` layer the same object is read frame-aware instead: the cache
plans whole frames and coalesces them, so that a batch of frames costs a few large
reads. A file object has one position, so :class:`FileObjectFileSystem` reads it under
a lock, one range after the other (in the order of their offsets), each with one
``seek`` and one ``read`` (more only when ``read`` returns less than asked, as a raw
stream may). The object is never closed, and is left where the last read put it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fsspec.spec import AbstractFileSystem

from hdfsspec._fork import renew_after_fork

__all__ = ["FileObjectFileSystem", "check_file_object"]

_BYTES = (bytes, bytearray, memoryview)


def check_file_object(obj: Any) -> None:
    """Raise unless ``obj`` is a readable, seekable, open binary file object.

    Raises
    ------
    TypeError
        ``obj`` has no ``read`` and ``seek``, is in text mode, or is not readable.
    ValueError
        ``obj`` is closed, or cannot seek.
    """
    kind = type(obj).__name__
    if isinstance(obj, io.TextIOBase):
        raise TypeError(
            f"hdfsspec reads binary files, not {kind} (a file in text mode): open it "
            "with mode 'rb'"
        )
    if not (callable(getattr(obj, "read", None)) and callable(getattr(obj, "seek", None))):
        raise TypeError(
            "hdfsspec reads an object by URL or path, a UPath, an fsspec OpenFile, or a "
            f"readable, seekable binary file object, not {kind}"
        )
    if getattr(obj, "closed", False) is True:
        raise ValueError(f"I/O operation on closed file ({kind})")
    if _answers(obj, "readable") is False:
        raise TypeError(f"hdfsspec reads readable binary files, not {kind} (not readable)")
    if _answers(obj, "seekable") is False:
        raise ValueError(
            f"{kind} cannot seek: frames are read at their offsets (read the bytes into "
            "io.BytesIO, or give the object's URL)"
        )


def _answers(obj: Any, name: str) -> bool | None:
    """``obj.<name>()`` (``readable``, ``seekable``), or None if it has no such method."""
    method = getattr(obj, name, None)
    return bool(method()) if callable(method) else None


def describe(obj: Any) -> str:
    """The name of ``obj`` in messages: its ``name`` if it is a string, else its type."""
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) and name else f"<{type(obj).__name__}>"


class FileObjectFileSystem(AbstractFileSystem):
    """One file object as a filesystem holding one file, ``name``.

    Parameters
    ----------
    fileobj : binary file object
        Readable and seekable (see :func:`check_file_object`); never closed here.
    name : str, optional
        Its path on this filesystem and its name in messages (by default its ``name``
        attribute if it is a string, else ``<TypeName>``).
    """

    protocol = "fileobj"
    root_marker = ""
    cachable = False  # an instance per object: the cache would keep the object alive

    def __init__(self, fileobj: Any, name: str | None = None, **kwargs: Any) -> None:
        check_file_object(fileobj)
        super().__init__(**kwargs)
        self.fileobj = fileobj
        self.name = name or describe(fileobj)
        self._size: int | None = None
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        return str(path)

    def unstrip_protocol(self, name: str) -> str:
        return name

    def _check(self, path: str) -> None:
        if path != self.name:
            raise FileNotFoundError(f"{path!r}: this filesystem holds only {self.name!r}")

    def _object_size(self) -> int:
        """The size of the object (from a seek to its end, made once), under the lock."""
        if self._size is None:
            end = self.fileobj.seek(0, io.SEEK_END)
            self._size = end if isinstance(end, int) else int(self.fileobj.tell())
        return self._size

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self._check(path)
        with self._lock:
            return {"name": self.name, "size": self._object_size(), "type": "file"}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        info = self.info(path)
        return [info] if detail else [info["name"]]

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        self._check(path)
        with self._lock:
            return self._read(*_bounds(start, end, self._object_size()))

    def cat_ranges(
        self,
        paths: list[str],
        starts: int | list[int],
        ends: int | list[int],
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """The ranges, read in the order of their offsets under one hold of the lock
        (ranges that touch or overlap are one read)."""
        for path in set(paths):
            self._check(path)
        n = len(paths)
        firsts = starts if isinstance(starts, list) else [starts] * n
        lasts = ends if isinstance(ends, list) else [ends] * n
        with self._lock:
            try:
                size = self._object_size()
                ranges = [_bounds(a, b, size) for a, b in zip(firsts, lasts, strict=True)]
                return _split(_merged(ranges), ranges, self._read)
            except Exception as exc:
                if on_error != "return":
                    raise
                return [exc] * n

    def _read(self, start: int, stop: int) -> bytes:
        """``[start, stop)`` of the object: one seek and as many reads as it takes."""
        if stop <= start:
            return b""
        f = self.fileobj
        f.seek(start)
        parts, held = [], 0
        while held < stop - start:
            chunk = f.read(stop - start - held)
            if not chunk:
                break  # the end of the object
            if not isinstance(chunk, _BYTES):
                raise TypeError(
                    f"{self.name}: read() returned {type(chunk).__name__}, not bytes (a file "
                    "in text mode?): open it in binary mode"
                )
            parts.append(bytes(chunk))
            held += len(chunk)
        return b"".join(parts)


def _bounds(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    """``[start, end)`` as fsspec reads it (None: the object's ends; negative: from its end)."""
    first = 0 if start is None else (max(0, size + start) if start < 0 else start)
    last = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
    return first, last


def _merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges as spans read once each: sorted, those that touch or overlap joined."""
    spans: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        else:
            spans.append((a, b))
    return spans


def _split(
    spans: list[tuple[int, int]],
    ranges: Sequence[tuple[int, int]],
    read: Callable[[int, int], bytes],
) -> list[bytes]:
    """Read each span once; return the bytes of each range, in the order asked."""
    data = [(a, read(a, b)) for a, b in spans]
    out = []
    for a, b in ranges:
        base, held = next((s, d) for s, d in reversed(data) if s <= a)
        out.append(held[a - base : b - base])
    return out

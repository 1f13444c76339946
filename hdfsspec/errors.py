"""Typed errors raised for malformed or unsupported DICOM objects.

Every error names the object (``path``), the absolute byte ``offset`` at which
the problem was found and, where one applies, the DICOM ``tag`` being read.
Backend errors (``FileNotFoundError``, ``PermissionError`` ...) are never
wrapped: they pass through unchanged. A transport failure that outlasts the
retries (a body cut short, a reset connection, a 5xx...) is a
:class:`TransportError`, an ``OSError`` naming the object and the byte range.
"""

from __future__ import annotations

import errno
import re

__all__ = [
    "DicomFormatError",
    "FrameIndexError",
    "MixedSeriesError",
    "NotDicomError",
    "ObjectChangedError",
    "OffsetTableError",
    "ReadOnlyError",
    "SeriesError",
    "TransportError",
    "TruncatedDicomError",
    "UnsupportedTransferSyntaxError",
]


def format_tag(tag: int | None) -> str:
    """Return ``(gggg,eeee)`` for an integer tag, ``"-"`` for ``None``."""
    if tag is None:
        return "-"
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class DicomFormatError(ValueError):
    """A DICOM object is malformed or cannot be indexed.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str, optional
        The object being read.
    offset : int, optional
        Absolute byte offset in the object where the problem was found.
    tag : int, optional
        The DICOM tag being read there, as ``0xGGGGEEEE``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        tag: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.offset = offset
        self.tag = tag
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [f"byte {self.offset}" if self.offset is not None else None]
        if self.tag is not None:
            where.append(f"tag {format_tag(self.tag)}")
        loc = ", ".join(w for w in where if w)
        return f"{self.path or '<unknown object>'}: {self.message}" + (f" [{loc}]" if loc else "")

    def __reduce__(self):  # keep keyword arguments through pickling (dask, multiprocessing)
        return (_rebuild, (type(self), self.message, self.path, self.offset, self.tag))


def _rebuild(cls, message, path, offset, tag):
    return cls(message, path=path, offset=offset, tag=tag)


class NotDicomError(DicomFormatError):
    """The object is not a DICOM Part 10 file."""


class TruncatedDicomError(DicomFormatError):
    """An element, item or frame extends beyond the end of the object."""


class OffsetTableError(DicomFormatError):
    """A Basic or Extended Offset Table is inconsistent with the Pixel Data."""


class FrameIndexError(DicomFormatError):
    """The frames of the Pixel Data cannot be located unambiguously."""


class UnsupportedTransferSyntaxError(DicomFormatError):
    """The transfer syntax cannot be read frame by frame (e.g. Deflated)."""


class ObjectChangedError(DicomFormatError):
    """The object changed (size or content) while it was being read."""


class SeriesError(DicomFormatError):
    """The objects named (a prefix, a glob, a list) do not make the series asked for:
    none at all, no pyramid level, slices that do not stack into a volume... ``path``
    names the prefix, glob or object."""


class MixedSeriesError(SeriesError):
    """The objects named belong to more than one series (``series_uids``, sorted); pick
    one with ``series_uid=``."""

    def __init__(
        self, message: str, *, path: str | None = None, series_uids: tuple[str, ...] = ()
    ) -> None:
        self.series_uids = series_uids
        super().__init__(message, path=path)

    def __reduce__(self):  # keep the UIDs through pickling
        return (_rebuild_mixed, (type(self), self.message, self.path, self.series_uids))


def _rebuild_mixed(cls, message, path, series_uids):
    return cls(message, path=path, series_uids=series_uids)


class ReadOnlyError(NotImplementedError):
    """The ``dicom`` filesystem only reads; writing is not supported."""


class TransportError(OSError):
    """Bytes of an object could not be read: the transport failed, and so did the retries.

    A body cut short or reset, a dropped connection, a timeout, a 5xx answer: after
    the bounded retries (see :mod:`hdfsspec.io.retry`) the last such failure is this
    error's ``__cause__``. Missing objects and denied access are not transport
    failures: ``FileNotFoundError`` and ``PermissionError`` pass through unchanged, and
    an object replaced while open is :class:`ObjectChangedError`.

    Parameters
    ----------
    path : str or None
        The object (its query string and user info are left out: a presigned URL's
        signature never reaches a message).
    start, stop : int
        The byte range that could not be read (``stop`` excluded).
    reason : str
        What the last attempt met (e.g. ``"HTTP 503"``, ``"ClientPayloadError: ..."``).
    attempts : int, optional
        How many attempts were made, where one count tells it (a read that went from
        a signed URL to s3fs, whose own client retries inside one call, has none).
    """

    def __init__(
        self,
        path: str | None,
        start: int,
        stop: int,
        reason: str = "",
        attempts: int | None = None,
    ) -> None:
        self.path = None if path is None else plain_name(path)
        self.start, self.stop = start, stop
        self.reason = plain_text(reason)
        self.attempts = attempts
        super().__init__(errno.EIO, self._message(), self.path)

    def _message(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts else " after the retries"
        why = f": {self.reason}" if self.reason else ""
        where = self.path or "<unknown object>"
        return f"{where}: bytes {self.start}-{self.stop} could not be read{tries}{why}"

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):  # keep keyword arguments through pickling (dask, multiprocessing)
        return (
            _rebuild_transport,
            (type(self), self.path, self.start, self.stop, self.reason, self.attempts),
        )


def _rebuild_transport(cls, path, start, stop, reason, attempts):
    return cls(path, start, stop, reason, attempts)


_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s'\"<>?#]*)[?#][^\s'\"<>]*", re.IGNORECASE)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/?#@\s'\"<>]+@", re.IGNORECASE)


def plain_name(path: str) -> str:
    """``path`` without a URL's query, fragment or user info (a signature, a token)."""
    name = _USERINFO.sub(r"\1", path)
    if "://" in name:
        return _QUERY.sub(r"\1", name)
    return name.split("?", 1)[0]


def plain_text(text: str, limit: int = 300) -> str:
    """``text`` with the query, fragment and user info of every URL in it left out, and
    cut to ``limit`` characters."""
    text = _QUERY.sub(r"\1", _USERINFO.sub(r"\1", text))
    return text if len(text) <= limit else text[: limit - 3] + "..."

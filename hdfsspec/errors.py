"""Typed errors raised for malformed or unsupported DICOM objects.

Every error names the object (``path``), the absolute byte ``offset`` at which
the problem was found and, where one applies, the DICOM ``tag`` being read.
Backend errors (``FileNotFoundError``, ``PermissionError`` ...) are never
wrapped: they pass through unchanged.
"""

from __future__ import annotations

__all__ = [
    "DicomFormatError",
    "FrameIndexError",
    "NotDicomError",
    "ObjectChangedError",
    "OffsetTableError",
    "ReadOnlyError",
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


class ReadOnlyError(NotImplementedError):
    """The ``dicom`` filesystem only reads; writing is not supported."""

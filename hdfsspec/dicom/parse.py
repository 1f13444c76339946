"""Parse the header of a DICOM object read through ``fetch``: one right-sized request.

:func:`parse_header` walks the elements up to the Pixel Data (see
:mod:`hdfsspec.dicom.header`), reads the data set with pydicom, and keeps every byte it
fetched, with the Basic Offset Table when those bytes hold it. Locating the frames
from the result is :mod:`hdfsspec.dicom.frame_locations`'s work. Pure: no fsspec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from hdfsspec._types import DEFAULT_OPTIONS, Fetch, KiB, ReadOptions
from hdfsspec.dicom.header import (
    ITEM,
    Header,
    PrefixBuffer,
    read_header,
)
from hdfsspec.errors import (
    FrameIndexError,
    NotDicomError,
    OffsetTableError,
)

__all__ = [
    "ParsedHeader",
    "attr",
    "check_image",
    "int_attr",
    "number_of_frames",
    "parse_header",
]

_PIXEL_TAG = 0x7FE00010
# what pydicom raises on bytes it cannot read or values it cannot convert (a VR it
# does not know, a length that is no multiple of the value size, text it cannot decode)
_PYDICOM_FAILURES = (
    EOFError,
    struct.error,
    ValueError,
    KeyError,
    TypeError,
    NotImplementedError,
    OverflowError,
    BytesLengthException,
    InvalidDicomError,
)


@dataclass(frozen=True)
class ParsedHeader:
    """The header of an object: its bytes, its data set and where its frames begin.

    Attributes
    ----------
    header : Header
        Positions found by the walker.
    prefix : bytes
        Every byte fetched from the start of the object (at least ``header_end``).
    header_end : int
        First byte after the header (see :class:`~hdfsspec.dicom.index.FrameIndex`).
    bot : tuple of int or None
        Basic Offset Table entries (relative, as stored), empty if none; None when
        the table lies beyond the bytes fetched for the header (read with the index).
    dataset : pydicom.Dataset
        The data set without Pixel Data (file meta in ``dataset.file_meta``).
    requests : int
        Number of requests the header cost.
    """

    header: Header
    prefix: bytes
    header_end: int
    bot: tuple[int, ...] | None
    dataset: Dataset
    requests: int
    size: int
    path: str | None
    bot_span: tuple[int, int] = (0, 0)

    @property
    def complete(self) -> bool:
        """False for the data set alone, read before a deferred Extended Offset Table."""
        return self.header.deferred is None

    def read_dataset(self) -> Dataset:
        """Return a new pydicom data set of the header (file meta in ``file_meta``)."""
        stop = self.header.pixel_data_offset or self.size
        if self.header.deferred is not None:
            stop = self.header.deferred[0]
        return _read_dataset(self.prefix[:stop], self.path, self.header.nesting)


def parse_header(
    fetch: Fetch,
    size: int,
    *,
    path: str | None = None,
    options: ReadOptions = DEFAULT_OPTIONS,
    defer_tables: bool = False,
) -> ParsedHeader:
    """Read the header of an object, and its Basic Offset Table if the bytes hold it.

    A Basic Offset Table that ends beyond the bytes fetched for the header is read
    with the index (:func:`~hdfsspec.dicom.frame_locations.index_from_tables`):
    opening costs no request for it.
    With ``defer_tables``, an Extended Offset Table beyond the bytes fetched is not
    read either: the result then has only the data set before it (``complete`` is
    False; ``header.deferred`` says what is left to read) and serves nothing else.

    Parameters
    ----------
    fetch : callable
        ``fetch(start, stop) -> bytes``.
    size : int
        Object size in bytes.
    path : str, optional
        Name of the object, for error messages.
    options : ReadOptions, optional
        ``first_request`` sets the size of the first request.

    Returns
    -------
    ParsedHeader
    """
    buf = PrefixBuffer(fetch, size, options.first_request or 64 * KiB, path)
    header = read_header(buf, defer_tables)
    if header.deferred is not None:  # the data set before the Extended Offset Table
        element = header.deferred[0]
        dataset = _read_dataset(bytes(buf.data[:element]), path, header.nesting)
        prefix = bytes(buf.data)
        return ParsedHeader(header, prefix, element, (), dataset, buf.requests, size, path)
    bot: tuple[int, ...] | None = ()
    bot_span = (0, 0)
    if header.pixel_data_offset is None:
        header_end = size
    elif header.encapsulated:
        pos = header.pixel_value_offset
        tag, length = struct.unpack("<LL", buf.read(pos, 8, tag=_PIXEL_TAG, what="BOT item"))
        tag = (tag & 0xFFFF) << 16 | tag >> 16
        if tag != ITEM:
            raise OffsetTableError(
                f"expected the Basic Offset Table item (FFFE,E000), found {tag:08X}",
                path=path,
                offset=pos,
                tag=_PIXEL_TAG,
            )
        if length % 4:
            raise OffsetTableError(
                f"Basic Offset Table length {length} is not a multiple of 4",
                path=path,
                offset=pos + 4,
                tag=_PIXEL_TAG,
            )
        buf.ensure(
            pos + 8 + length, tag=_PIXEL_TAG, what="Basic Offset Table", at=pos, fetch=False
        )
        bot_span, header_end = (pos + 8, pos + 8 + length), pos + 8 + length
        if header_end <= len(buf.data):
            bot = struct.unpack(f"<{length // 4}L", bytes(buf.data[pos + 8 : header_end]))
        else:
            bot = None  # read with the index, if it is needed at all
    else:
        header_end = header.pixel_value_offset
    dataset = _read_dataset(
        bytes(buf.data[: header.pixel_data_offset or size]), path, header.nesting
    )
    return ParsedHeader(
        header, bytes(buf.data), header_end, bot, dataset, buf.requests, size, path, bot_span
    )


def _read_dataset(
    data: bytes, path: str | None, nesting: tuple[int, int, int] = (0, 0, 0)
) -> Dataset:
    try:
        return pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=True)
    except (*_PYDICOM_FAILURES, OSError) as exc:  # OSError: read from memory, not a backend
        raise NotDicomError(f"pydicom cannot read the header: {exc}", path=path, offset=0) from exc
    except RecursionError as exc:  # pydicom reads nested sequences by recursion
        depth, offset, tag = nesting
        raise NotDicomError(
            f"pydicom cannot read the header: its sequences and items nest {depth} deep",
            path=path,
            offset=offset,
            tag=tag or None,
        ) from exc


def attr(ds: Dataset, keyword: str, default: Any, parsed: ParsedHeader) -> Any:
    """The value of ``keyword`` (or ``default``); a value pydicom cannot convert is a typed error.

    pydicom converts values when they are first used, so a damaged element surfaces
    here, not in ``dcmread``: it becomes :class:`NotDicomError` naming its offset and tag.
    """
    try:
        return ds.get(keyword, default)
    except _PYDICOM_FAILURES as exc:
        tag, offset = _where(ds, keyword)
        raise NotDicomError(
            f"pydicom cannot read {keyword}: {exc}",
            path=parsed.path,
            offset=0 if offset is None else offset,
            tag=tag,
        ) from exc


def _where(ds: Dataset, keyword: str) -> tuple[int, int | None]:
    """The tag of ``keyword`` and the offset of its value in the object, when known."""
    tag = pydicom.datadict.tag_for_keyword(keyword) or 0
    try:
        elem = ds.get_item(tag, keep_deferred=True) if tag in ds else None
    except _PYDICOM_FAILURES:
        elem = None
    return tag, getattr(elem, "value_tell", None)


def int_attr(
    ds: Dataset,
    keyword: str,
    default: int | None,
    parsed: ParsedHeader,
    low: int | None = None,
    high: int | None = None,
    why: str = "",
) -> int:
    """The integer value of ``keyword`` (or ``default``), within ``[low, high]`` if given.

    Raises
    ------
    FrameIndexError
        Missing without a default, not an integer, or out of bounds (``why`` says what
        the bounds are); naming the element's tag and the offset of its value.
    """
    tag, offset = _where(ds, keyword)  # before pydicom converts it (the offset goes then)
    at = offset if offset is not None else parsed.header.pixel_data_offset
    value = attr(ds, keyword, default, parsed)
    if value is None or value == "":
        if default is not None:
            return default
        raise FrameIndexError(
            f"the image has no {keyword}",
            path=parsed.path,
            offset=parsed.header.pixel_data_offset,
            tag=_PIXEL_TAG,
        )
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise FrameIndexError(
            f"{keyword} is not an integer: {value!r}", path=parsed.path, offset=at, tag=tag
        ) from exc
    if (low is not None and number < low) or (high is not None and number > high):
        message = f"{keyword} is {number}: {why}"
        raise FrameIndexError(message, path=parsed.path, offset=at, tag=tag)
    return number


def number_of_frames(parsed: ParsedHeader) -> int:
    """Number of Frames of the data set (1 when absent)."""
    size = parsed.size
    why = f"negative, or more than the object's {size} bytes"  # a frame holds a bit at least
    return int_attr(parsed.dataset, "NumberOfFrames", 1, parsed, 0, 8 * size, why)


def check_image(parsed: ParsedHeader) -> None:
    """Check the attributes highdicom builds its frame tables from, before it does.

    Number of Frames at least 1 (and at most 8 x the object size), Rows and Columns at
    least 1, a total pixel matrix of at least one pixel that (TILED_FULL) has no more
    tiles than frames: damaged values would otherwise fail inside highdicom with
    unrelated errors (a ``ZeroDivisionError``, a ``MemoryError``), or keep it busy
    for minutes laying out 10**9 rows of tiles.

    Raises
    ------
    FrameIndexError
        Naming the attribute's tag and the offset of its value.
    """
    ds = parsed.dataset
    matrix_tag, matrix_at = _where(ds, "TotalPixelMatrixRows")  # before it is converted
    why = f"less than one, or more than 8 x the object's {parsed.size} bytes"
    n = int_attr(ds, "NumberOfFrames", 1, parsed, 1, 8 * parsed.size, why)
    values = {}
    for keyword in ("Rows", "Columns", "TotalPixelMatrixRows", "TotalPixelMatrixColumns"):
        if keyword in ds or keyword in ("Rows", "Columns"):
            values[keyword] = int_attr(ds, keyword, None, parsed, 1, None, "less than one")
    if str(attr(ds, "DimensionOrganizationType", "", parsed)).upper() != "TILED_FULL":
        return
    rows, cols = values.get("TotalPixelMatrixRows"), values.get("TotalPixelMatrixColumns")
    if rows is None or cols is None:
        return
    tiles = -(-rows // values["Rows"]) * -(-cols // values["Columns"])
    if tiles > n:
        raise FrameIndexError(
            f"a total pixel matrix of {rows} x {cols} in tiles of {values['Rows']} x "
            f"{values['Columns']} has {tiles} tiles, more than the {n} frames",
            path=parsed.path,
            offset=matrix_at if matrix_at is not None else parsed.header.pixel_data_offset,
            tag=matrix_tag,
        )

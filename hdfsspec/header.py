"""Locate the header, the Pixel Data element and the offset tables of a Part 10 stream.

The walker reads through a ``fetch(start, stop)`` callable into a contiguous
prefix buffer that starts with a right-sized first request and grows (at least
doubling, or to the end of a large element value at once) only when the header
is larger. It never trusts a length field beyond the object size, so a corrupt
length cannot drive an allocation or a request past the end of the object.

No fsspec here, and no shared cursor: every position is explicit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hdfsspec._types import Fetch
from hdfsspec.errors import (
    NotDicomError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)

__all__ = ["Header", "PrefixBuffer", "read_header"]

ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
TRANSFER_SYNTAX_UID = 0x00020010
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"


class PrefixBuffer:
    """The bytes ``[0, n)`` of an object, grown on demand through ``fetch``.

    Parameters
    ----------
    fetch : callable
        ``fetch(start, stop) -> bytes``.
    size : int
        Object size in bytes.
    first_request : int
        Size of the first request.
    path : str, optional
        Name of the object, for error messages.
    """

    def __init__(self, fetch: Fetch, size: int, first_request: int, path: str | None) -> None:
        self._fetch = fetch
        self.size = size
        self.path = path
        self.first_request = first_request
        self.data = bytearray()
        self.requests = 0

    def ensure(
        self,
        stop: int,
        *,
        tag: int | None = None,
        what: str = "element",
        at: int | None = None,
        fetch: bool = True,
        margin: int | None = None,
    ) -> None:
        """Make sure ``[0, stop)`` is buffered; raise if ``stop`` is past the end.

        ``at`` is the offset of the element being read, for the error message.
        With ``fetch=False`` only the bound is checked. A fetch reads ``margin``
        bytes past ``stop`` when the caller knows what follows (by default one
        first request, or double the buffer).
        """
        if stop > self.size:
            raise TruncatedDicomError(
                f"{what} ends at byte {stop}, beyond the end of the object ({self.size} bytes)",
                path=self.path,
                offset=stop if at is None else at,
                tag=tag,
            )
        have = len(self.data)
        if stop <= have or not fetch:
            return
        # the needed end plus one first-request of margin (what follows a large value is
        # usually small: the next elements, the Pixel Data and BOT headers), or double
        if margin is not None:
            grown = stop + margin
        else:
            grown = max(stop + self.first_request, 2 * have) if have else self.first_request
        want = min(self.size, max(stop, grown))
        chunk = self._fetch(have, want)
        self.requests += 1
        if len(chunk) == self.size and want - have != self.size:
            self.data = bytearray(chunk)  # the server ignored Range: keep the whole object
            return
        if len(chunk) != want - have:
            raise TruncatedDicomError(
                f"asked for bytes {have}-{want} but received {len(chunk)} bytes; "
                "the object is shorter than its reported size or changed while being read",
                path=self.path,
                offset=have + len(chunk),
                tag=tag,
            )
        self.data += chunk

    def read(
        self, start: int, length: int, *, tag: int | None = None, what: str = "element"
    ) -> bytes:
        """Return ``length`` bytes at ``start``, growing the buffer if needed."""
        self.ensure(start + length, tag=tag, what=what, at=start)
        return bytes(self.data[start : start + length])


@dataclass(frozen=True)
class Header:
    """What the walker learnt about the object.

    Attributes
    ----------
    transfer_syntax_uid : str
        Transfer Syntax UID of the data set.
    dataset_start : int
        Offset of the first element after the File Meta Information.
    pixel_data_offset : int or None
        Offset of the Pixel Data element tag, ``None`` without pixels.
    pixel_keyword : str or None
        Keyword of the pixel element found.
    pixel_value_offset : int
        Offset of the first byte of the Pixel Data value.
    pixel_length : int
        Value length of the Pixel Data element (UNDEFINED when encapsulated).
    eot : tuple of (offset, length) or None
        Position of the Extended Offset Table value.
    eot_lengths : tuple of (offset, length) or None
        Position of the Extended Offset Table Lengths value.
    deferred : tuple of (element, start, stop) or None
        Set when the walk stopped at an Extended Offset Table beyond the bytes held
        (``read_header(..., defer_tables=True)``): the offset of the table's element
        (the data set read so far ends there), and ``[start, stop)``, the bytes still
        to read up to the first frame item. Nothing after the element is known then.
    nesting : tuple of (depth, offset, tag)
        The top-level element whose sequences nest deepest: how many sequences and
        items deep, its offset and its tag (``(0, 0, 0)`` without nesting).
    """

    transfer_syntax_uid: str
    dataset_start: int
    pixel_data_offset: int | None
    pixel_keyword: str | None
    pixel_value_offset: int
    pixel_length: int
    eot: tuple[int, int] | None
    eot_lengths: tuple[int, int] | None
    deferred: tuple[int, int, int] | None = None
    nesting: tuple[int, int, int] = (0, 0, 0)
    implicit_vr: bool = False  # as found, which may differ from the transfer syntax

    @property
    def is_implicit_vr(self) -> bool:
        return self.implicit_vr

    @property
    def is_little_endian(self) -> bool:
        return self.transfer_syntax_uid != _EXPLICIT_BE

    @property
    def encapsulated(self) -> bool:
        return self.pixel_data_offset is not None and self.pixel_length == UNDEFINED


class _Walker:
    """Reads element headers at explicit positions of a :class:`PrefixBuffer`."""

    def __init__(self, buf: PrefixBuffer, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        self.end = "<" if little else ">"
        self.deepest = (0, 0, 0)  # (depth, offset, tag) of the deepest nesting walked

    def tag(self, pos: int) -> int:
        group, elem = struct.unpack(self.end + "HH", self.buf.read(pos, 4, what="element tag"))
        return group << 16 | elem

    def element(self, pos: int, implicit: bool | None = None) -> tuple[int, int, int]:
        """Return ``(tag, value_offset, length)`` of the element at ``pos``."""
        tag, _, value, length = self.entry(pos, self.implicit if implicit is None else implicit)
        return tag, value, length

    def entry(self, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
        """Return ``(tag, vr, value_offset, length)``; ``vr`` is empty when implicit."""
        tag = self.tag(pos)
        if tag in (ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER) or implicit:
            (length,) = struct.unpack(self.end + "L", self.buf.read(pos + 4, 4, tag=tag))
            return tag, b"", pos + 8, length
        vr = self.buf.read(pos + 4, 2, tag=tag)
        if vr in _LONG_VRS:
            (length,) = struct.unpack(self.end + "L", self.buf.read(pos + 8, 4, tag=tag))
            return tag, vr, pos + 12, length
        if not b"AA" <= vr <= b"ZZ":
            # not a VR: pydicom (assume_implicit_vr_switch, its default) reads this one
            # element as implicit VR and goes on in explicit VR; a garbage length that
            # results is caught as a truncation, like any other
            (length,) = struct.unpack(self.end + "L", self.buf.read(pos + 4, 4, tag=tag))
            return tag, b"", pos + 8, length
        (length,) = struct.unpack(self.end + "H", self.buf.read(pos + 6, 2, tag=tag))
        return tag, vr, pos + 8, length

    def found_implicit(self, pos: int, assumed: bool) -> bool:
        """Whether the data set starting at ``pos`` is in implicit VR, as pydicom decides.

        pydicom reads the two bytes after the first tag: letters are a VR (explicit),
        anything else is the start of a length (implicit). Files written with the
        other encoding than their transfer syntax says exist, and pydicom reads them.
        """
        if pos + 6 > self.buf.size:
            return assumed
        return not _looks_like_vr(self.buf.read(pos + 4, 2, what="element VR"))

    def skip_undefined(
        self, pos: int, tag: int, at: int | None = None, *, implicit: bool | None = None
    ) -> int:
        """Skip an undefined-length value starting at ``pos``; return the offset after it.

        Nested sequences and items are walked with a stack of their own, not by
        recursion: how deep they nest is bounded by the object's size, not by Python's.
        ``at`` is the offset of the element (for :attr:`deepest`; default ``pos``);
        ``implicit`` is the encoding of the value's items (default: the walker's).
        An item of an explicit-VR sequence may be encoded in implicit VR (PS3.5
        7.5), as pydicom reads it, and a UN element of undefined length holds an
        implicit-VR sequence (PS3.5 6.2.2).
        """
        # per open level: (a sequence, not an item?, its tag, its encoding)
        stack = [(True, tag, self.implicit if implicit is None else implicit)]
        start, depth = pos if at is None else at, 1
        while stack:
            in_sequence, owner, level_implicit = stack[-1]
            elem_tag, vr, value, length = self.entry(pos, level_implicit)
            if elem_tag == (SEQUENCE_DELIMITER if in_sequence else ITEM_DELIMITER):
                stack.pop()
                pos = value
                continue
            if in_sequence and elem_tag != ITEM:
                raise NotDicomError(
                    f"expected an item or a sequence delimiter in {owner:08X}, "
                    f"found {elem_tag:08X}",
                    path=self.buf.path,
                    offset=pos,
                    tag=elem_tag,
                )
            if length == UNDEFINED:  # an item's data set, or a sequence inside one
                if in_sequence:  # an item: its data set may be implicit in an explicit file
                    inner = level_implicit or self.found_implicit(value, level_implicit)
                else:
                    inner = level_implicit or vr == b"UN"
                stack.append((not in_sequence, elem_tag, inner))
                depth = max(depth, len(stack))
                pos = value
            else:
                what = "item" if in_sequence else "element"
                self.buf.ensure(value + length, tag=elem_tag, what=what, at=pos)
                pos = value + length
        if depth > self.deepest[0]:
            self.deepest = (depth, start, tag)
        return pos


def _looks_like_vr(vr: bytes) -> bool:
    """Two upper-case ASCII letters (pydicom's test for an explicit VR)."""
    return len(vr) == 2 and 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


def _file_meta(buf: PrefixBuffer) -> tuple[str, int]:
    """Return the transfer syntax and the offset of the data set."""
    buf.ensure(min(buf.size, max(buf.first_request, 132)), what="file preamble")
    if buf.size >= 132 and buf.data[128:132] == b"DICM":
        pos = 132
    elif buf.size >= 8 and buf.data[0:2] == b"\x02\x00" and buf.data[4:6].isalpha():
        pos = 0  # no preamble: File Meta Information at the start
    else:
        raise NotDicomError(
            "not a DICOM Part 10 file: no 'DICM' prefix after the 128-byte preamble",
            path=buf.path,
            offset=128,
        )
    walker = _Walker(buf, implicit=False, little=True)
    syntax = None
    while pos < buf.size:
        tag = walker.tag(pos)
        if tag >> 16 != 0x0002:
            break
        tag, value, length = walker.element(pos)
        if length == UNDEFINED:
            raise NotDicomError(
                "undefined length in the File Meta Information", path=buf.path, offset=pos, tag=tag
            )
        if tag == TRANSFER_SYNTAX_UID:
            syntax = buf.read(value, length, tag=tag).rstrip(b"\x00 ").decode("ascii", "replace")
        buf.ensure(value + length, tag=tag, at=pos)
        pos = value + length
    if syntax is None:
        raise NotDicomError(
            "the File Meta Information has no Transfer Syntax UID",
            path=buf.path,
            offset=pos,
            tag=TRANSFER_SYNTAX_UID,
        )
    if syntax in _DEFLATED:
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {syntax} (deflated) cannot be read frame by frame",
            path=buf.path,
            offset=pos,
            tag=TRANSFER_SYNTAX_UID,
        )
    return syntax, pos


def read_header(buf: PrefixBuffer, defer_tables: bool = False) -> Header:
    """Walk the File Meta Information and the top-level data set up to the Pixel Data.

    Parameters
    ----------
    buf : PrefixBuffer
        The object, read through its prefix buffer.
    defer_tables : bool, optional
        Stop at an Extended Offset Table that lies beyond the bytes held, instead of
        fetching it (see ``Header.deferred``): the data set before it is complete.

    Returns
    -------
    Header
        Positions of the Pixel Data element and of the Extended Offset Table.

    Raises
    ------
    NotDicomError, TruncatedDicomError, UnsupportedTransferSyntaxError
        With the path, the byte offset and the tag.
    """
    syntax, start = _file_meta(buf)
    walker = _Walker(buf, implicit=syntax == _IMPLICIT_LE, little=syntax != _EXPLICIT_BE)
    walker.implicit = walker.found_implicit(start, walker.implicit)
    pos = start
    eot = eot_lengths = None
    while pos < buf.size:
        tag, vr, value, length = walker.entry(pos, walker.implicit)
        if tag in PIXEL_TAGS:
            if length != UNDEFINED:
                buf.ensure(min(value, buf.size), tag=tag)
            return Header(
                syntax,
                start,
                pos,
                PIXEL_TAGS[tag],
                value,
                length,
                eot,
                eot_lengths,
                nesting=walker.deepest,
                implicit_vr=walker.implicit,
            )
        if length == UNDEFINED:
            items_implicit = walker.implicit or vr == b"UN"
            pos = walker.skip_undefined(value, tag, at=pos, implicit=items_implicit)
            continue
        if tag == EXTENDED_OFFSET_TABLE:
            eot = (value, length)
            # its Lengths (same size) follow at once: fetch both, and the BOT item, together
            # (12 bytes of Lengths element header, 20 of Encapsulated Pixel Data Value
            # Total Length, 12 + 8 of Pixel Data and BOT item headers), and nothing more:
            # the frames after them are fetched when asked for
            stop = min(buf.size, value + 2 * length + 52)
            if defer_tables and stop > len(buf.data) and value + length <= buf.size:
                deferred = (pos, len(buf.data), stop)
                return Header(
                    syntax,
                    start,
                    None,
                    None,
                    buf.size,
                    0,
                    eot,
                    None,
                    deferred,
                    walker.deepest,
                    walker.implicit,
                )
            buf.ensure(stop, tag=tag, at=pos, margin=0)
        elif tag == EXTENDED_OFFSET_TABLE_LENGTHS:
            eot_lengths = (value, length)
        buf.ensure(value + length, tag=tag, at=pos)
        pos = value + length
    return Header(
        syntax,
        start,
        None,
        None,
        buf.size,
        0,
        eot,
        eot_lengths,
        nesting=walker.deepest,
        implicit_vr=walker.implicit,
    )

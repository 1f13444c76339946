"""Locate the header, the Pixel Data element and the offset tables of a Part 10 stream.

The walk (:mod:`hdfsspec.dicom.walker`) reads through a ``fetch(start, stop)`` callable
into a contiguous prefix buffer that starts with a right-sized first request and
grows (at least doubling, or to the end of a large element value at once) only
when the header is larger. It never trusts a length field beyond the object size,
so a corrupt length cannot drive an allocation or a request past the end of the
object.

No fsspec here, and no shared cursor: every position is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hdfsspec.dicom.walker import (
    ITEM,
    ITEM_DELIMITER,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    PrefixBuffer,
    Walker,
)
from hdfsspec.errors import NotDicomError, UnsupportedTransferSyntaxError

__all__ = [
    "ITEM",
    "ITEM_DELIMITER",
    "SEQUENCE_DELIMITER",
    "UNDEFINED",
    "Header",
    "PrefixBuffer",
    "read_header",
]

PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
TRANSFER_SYNTAX_UID = 0x00020010
# the data set after the File Meta Information is deflated as a whole (PS3.5 A.5, A.7,
# A.12). Not Deflated Image Frame Compression (1.2.840.10008.1.2.8.1, Sup 244): that one
# deflates each frame into its fragment, and is read as any encapsulated syntax
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_NATIVE = {_IMPLICIT_LE, "1.2.840.10008.1.2.1", _EXPLICIT_BE}
# the image attributes that size native Pixel Data; group 0028 comes before the large
# sequences of multi-frame objects (the functional groups, 5200; segments, 0062)
_SAMPLES, _PHOTOMETRIC, _FRAMES = 0x00280002, 0x00280004, 0x00280008
_ROWS, _COLUMNS, _BITS = 0x00280010, 0x00280011, 0x00280100
_IMAGE_ATTRS = {_SAMPLES, _PHOTOMETRIC, _FRAMES, _ROWS, _COLUMNS, _BITS}
# one item a frame (PS3.3 C.7.6.16): its items say where it ends long before it does
_PER_FRAME_GROUPS = 0x52009230


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
            offset=min(128, buf.size),
        )
    walker = Walker(buf, implicit=False, little=True)
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


def _image_value(tag: int, raw: bytes, little: bool) -> int | str | None:
    """The value of an image attribute (US, or IS / CS text); None if it is not one."""
    if tag == _PHOTOMETRIC:
        return raw.decode("ascii", "replace").strip("\x00 ")
    if tag == _FRAMES:
        text = raw.decode("ascii", "replace").strip("\x00 ")
        return int(text) if text.isdigit() else None
    return int.from_bytes(raw, "little" if little else "big") if len(raw) == 2 else None


def native_samples(samples: int, bits: int, photometric: str) -> int:
    """Samples per pixel as native Pixel Data stores them: YBR_FULL_422 subsamples Cb
    and Cr, two samples a pixel on average."""
    return 2 if photometric == "YBR_FULL_422" and bits >= 8 else samples


def native_pixel_offset(attrs: dict[int, Any], size: int) -> int | None:
    """Where native Pixel Data's value begins if it ends the object, from the image
    attributes seen so far (None until Rows, Columns and Bits Allocated are known).

    Used only to read the rest of a large header at once: if elements follow the
    Pixel Data, or it is not the size these say, the header is simply read on.
    """
    raw = [attrs.get(_ROWS), attrs.get(_COLUMNS), attrs.get(_BITS)]
    raw += [attrs.get(_SAMPLES, 1), attrs.get(_FRAMES, 1)]
    values = [v for v in raw if isinstance(v, int) and v > 0]
    if len(values) != len(raw):
        return None
    rows, cols, bits, samples, frames = values
    samples = native_samples(samples, bits, str(attrs.get(_PHOTOMETRIC, "")))
    needed = (frames * rows * cols * samples * bits + 7) // 8
    offset = size - needed - needed % 2  # a value of odd length is padded
    return offset if offset > 0 else None


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
    walker = Walker(buf, implicit=syntax == _IMPLICIT_LE, little=syntax != _EXPLICIT_BE)
    walker.implicit = walker.found_implicit(start, walker.implicit)
    pos = start
    eot: tuple[int, int] | None = None
    eot_lengths: tuple[int, int] | None = None
    image: dict[int, Any] | None = {} if syntax in _NATIVE else None
    frames: int | None = None

    def no_pixels(lengths: tuple[int, int] | None, deferred: Any = None) -> Header:
        """No Pixel Data (yet: ``deferred`` says what is left before it)."""
        return Header(
            syntax,
            start,
            None,
            None,
            buf.size,
            0,
            eot,
            lengths,
            deferred,
            walker.deepest,
            walker.implicit,
        )

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
            items = frames if tag == _PER_FRAME_GROUPS else None
            pos = walker.skip_undefined(value, tag, at=pos, implicit=items_implicit, items=items)
            continue
        if tag == EXTENDED_OFFSET_TABLE:
            eot = (value, length)
            # its Lengths (same size) follow at once: fetch both, and the BOT item, together
            # (12 bytes of Lengths element header, 20 of Encapsulated Pixel Data Value
            # Total Length, 12 + 8 of Pixel Data and BOT item headers), and nothing more:
            # the frames after them are fetched when asked for
            stop = min(buf.size, value + 2 * length + 52)
            if defer_tables and stop > len(buf.data) and value + length <= buf.size:
                return no_pixels(None, deferred=(pos, len(buf.data), stop))
            buf.ensure(stop, tag=tag, at=pos, margin=0)
        elif tag == EXTENDED_OFFSET_TABLE_LENGTHS:
            eot_lengths = (value, length)
        elif tag == _FRAMES and length <= 16:
            count = _image_value(tag, buf.read(value, length, tag=tag), walker.end == "<")
            frames = count if isinstance(count, int) else None
            if image is not None:
                image[tag] = count
                buf.expected_end = native_pixel_offset(image, buf.size)
        elif image is not None and tag in _IMAGE_ATTRS and length <= 16:
            raw = buf.read(value, length, tag=tag)
            image[tag] = _image_value(tag, raw, walker.end == "<")
            buf.expected_end = native_pixel_offset(image, buf.size)
        buf.ensure(value + length, tag=tag, at=pos)
        pos = value + length
    return no_pixels(eot_lengths)

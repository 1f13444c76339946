"""One entry of the persisted index store: its bytes, their authentication and validation.

An entry is the magic ``HDFSIDX3``, an HMAC-SHA256 (under the store's key) of the
magic and the body, then the body: the length of a JSON document (8 bytes, little
endian), the document (the object's identity and its
:class:`~hdfsspec.dicom.index.FrameIndex`), then the header bytes. An entry that someone
without the key edited does not verify, whatever checksum they recompute.

An entry that verifies is still checked before it is used, as a second line:

* :func:`decode` parses nothing larger than :data:`MAX_ENTRY`, reads the document
  strictly (exact fields and types; no float, NaN, huge integer or nesting passes)
  and checks the index's structure (:func:`check_index`);
* :func:`vouch` checks the index against the header the entry holds, once the cache
  has parsed it: the fields it gives, the number of frames, and the whole index
  where the header gives it (native Pixel Data, offset tables held in the entry).

Any failure raises :class:`DamagedEntry`: the store deletes the entry and the index
is built again from the object. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from hdfsspec.dicom.frame_locations import index_from_tables
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.dicom.parse import ParsedHeader, number_of_frames
from hdfsspec.errors import (
    FrameIndexError,
    NotDicomError,
    OffsetTableError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)

__all__ = [
    "CONTRADICTED",
    "MAX_ENTRY",
    "DamagedEntry",
    "check_index",
    "decode",
    "encode",
    "vouch",
]

CONTRADICTED = (
    NotDicomError,
    TruncatedDicomError,
    OffsetTableError,
    FrameIndexError,
    UnsupportedTransferSyntaxError,
)
"""The typed errors a persisted index (or its header) may meet in the object: a cache
that meets one under a persisted index drops the entry and learns the layout again."""

MAX_ENTRY = 2**28
"""Largest entry read (256 MiB); one of 24,649 frames takes about 0.5 MB."""
_MAGIC = b"HDFSIDX3"
_MAC = 32  # HMAC-SHA256
_LENGTH = struct.Struct("<Q")
_ITEM = 8  # a fragment item's header: an encapsulated frame is at least one
_FIELDS = frozenset(
    (
        "version",
        "size",
        "transfer_syntax_uid",
        "header_end",
        "offset_table",
        "starts",
        "stops",
        "pixel_keyword",
        "encapsulated",
        "bits_per_frame",
        "pixel_data_offset",
    )
)
_KINDS = ("bot", "eot", "tiff", "scan", "native", "none")
_KEYWORDS = (None, "PixelData", "FloatPixelData", "DoubleFloatPixelData")
_UID = re.compile(r"[0-9.]{1,64}")
_LARGEST = 2**55  # no object is larger (32 PiB): eight times it stays within int64


class DamagedEntry(ValueError):
    """An entry that does not verify or does not hold a consistent index."""


def encode(key: bytes, identity: Mapping[str, Any], index: FrameIndex, prefix: bytes) -> bytes:
    """The bytes of the entry of ``identity``: ``index`` and the header bytes ``prefix``."""
    meta = json.dumps({"identity": dict(identity), "index": index.to_dict()}).encode()
    body = _LENGTH.pack(len(meta)) + meta + prefix
    return _MAGIC + _mac(key, body) + body


def decode(key: bytes, data: bytes, identity: Mapping[str, Any]) -> tuple[FrameIndex, bytes]:
    """``(index, header bytes)`` of an entry of ``identity``.

    Raises
    ------
    DamagedEntry
        For anything but an authentic, consistent entry of this object (never another
        error, whatever the bytes).
    """
    if len(data) > MAX_ENTRY:
        raise DamagedEntry("entry too large")
    head = len(_MAGIC) + _MAC
    if len(data) < head + _LENGTH.size or data[: len(_MAGIC)] != _MAGIC:
        raise DamagedEntry("not an index entry of this version")
    body = data[head:]
    if not hmac.compare_digest(_mac(key, body), data[len(_MAGIC) : head]):
        raise DamagedEntry("entry not authentic (damaged, or written without the store's key)")
    (length,) = _LENGTH.unpack_from(body)
    if length > len(body) - _LENGTH.size:
        raise DamagedEntry("entry cut short")
    meta = _json(body[_LENGTH.size : _LENGTH.size + length])
    prefix = body[_LENGTH.size + length :]
    if not isinstance(meta, dict) or set(meta) != {"identity", "index"}:
        raise DamagedEntry("entry without identity and index")
    if meta["identity"] != dict(identity):
        raise DamagedEntry("entry of another object")
    index = index_from_json(meta["index"])
    if index.size != identity.get("size") or len(prefix) < index.header_end:
        raise DamagedEntry("entry inconsistent with the object")
    return index, prefix


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _MAGIC + body, hashlib.sha256).digest()


def _json(text: bytes) -> Any:
    """Parse JSON; anything but plain JSON (NaN, Infinity, depth past the recursion
    limit, a number of too many digits, bad UTF-8) is a damaged entry."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError, MemoryError) as exc:
        raise DamagedEntry(f"entry holds no valid JSON ({type(exc).__name__})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} in an entry")


def index_from_json(doc: Any) -> FrameIndex:
    """A :class:`FrameIndex` from its :meth:`~FrameIndex.to_dict` form, read strictly.

    Every field must be there with its type (no float for an integer, no string for
    a boolean), every integer within bounds, and the index consistent
    (:func:`check_index`); anything else raises :class:`DamagedEntry`.
    """
    if not isinstance(doc, dict) or set(doc) != _FIELDS or doc["version"] != 1:
        raise DamagedEntry("index of another form or version")
    uid, kind, keyword = doc["transfer_syntax_uid"], doc["offset_table"], doc["pixel_keyword"]
    if not isinstance(uid, str):
        raise DamagedEntry("transfer syntax UID is no string")
    if kind not in _KINDS or keyword not in _KEYWORDS or type(doc["encapsulated"]) is not bool:
        raise DamagedEntry("offset table kind, pixel keyword or encapsulation invalid")
    index = FrameIndex(
        size=_count(doc["size"]),
        transfer_syntax_uid=uid,
        header_end=_count(doc["header_end"]),
        offset_table=kind,
        starts=_offsets(doc["starts"]),
        stops=_offsets(doc["stops"]),
        pixel_keyword=keyword,
        encapsulated=doc["encapsulated"],
        bits_per_frame=_count(doc["bits_per_frame"]),
        pixel_data_offset=_count(doc["pixel_data_offset"]),
    )
    check_index(index)
    return index


def _count(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _LARGEST:
        raise DamagedEntry("a size or offset that is not an integer within bounds")
    return value


def _offsets(values: Any) -> np.ndarray:
    """A list of integers as an int64 array (floats, booleans alone, nesting refused)."""
    if not isinstance(values, list):
        raise DamagedEntry("frame offsets are not a list")
    if not values:
        return np.empty(0, dtype=np.int64)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        raise DamagedEntry("frame offsets are not a list of integers") from None
    if arr.ndim != 1 or arr.dtype.kind != "i":  # floats, huge integers (object), strings
        raise DamagedEntry("frame offsets are not a list of integers")
    arr = arr.astype(np.int64)
    if np.any((arr < UNKNOWN) | (arr > _LARGEST)):
        raise DamagedEntry("frame offset out of bounds")
    return arr


def check_index(index: FrameIndex) -> None:
    """Check that ``index`` is one the locators could have built, from its values alone.

    A UID of digits and dots; offsets within the object; the header before the
    frames; for native Pixel Data, every frame exactly where the frame size puts it;
    for encapsulated Pixel Data, the first frame at the header's end, frames in file
    order, at least one item header long, not overlapping (and back to back, but for
    an Extended Offset Table with lengths), only the last end unknown.

    Raises
    ------
    DamagedEntry
        If any of it does not hold.
    """
    size, end, n = index.size, index.header_end, index.number_of_frames
    starts, stops, kind = index.starts, index.stops, index.offset_table
    if not (0 <= end <= size and 0 <= index.pixel_data_offset <= size):
        raise DamagedEntry("header outside the object")
    if not _UID.fullmatch(index.transfer_syntax_uid):
        raise DamagedEntry("transfer syntax UID is no UID")
    if index.pixel_keyword is None or kind == "none":
        plain = index.pixel_keyword is None and kind == "none" and n == 0
        if not (plain and end == size and index.pixel_data_offset == size):
            raise DamagedEntry("an index without Pixel Data holds pixels")
        if index.encapsulated or index.bits_per_frame:
            raise DamagedEntry("an index without Pixel Data holds pixels")
        return
    if index.pixel_data_offset + _ITEM > end:
        raise DamagedEntry("Pixel Data element after the header's end")
    if kind == "native":
        _check_native(index)
        return
    if not index.encapsulated or index.bits_per_frame or index.pixel_keyword != "PixelData":
        raise DamagedEntry(f"an index of kind {kind!r} that is not of encapsulated frames")
    if n == 0:
        return
    known = stops[:-1]
    last = int(stops[-1])
    if int(starts[0]) != end or int(starts[-1]) + _ITEM > size:
        raise DamagedEntry("frames do not start at the header's end, or end past the object")
    if np.any(known < starts[:-1] + _ITEM) or np.any(known > starts[1:]):
        raise DamagedEntry("frames out of file order, overlapping or shorter than an item")
    if kind != "eot" and not np.array_equal(known, starts[1:]):
        raise DamagedEntry("frames not back to back")
    if last != UNKNOWN and not int(starts[-1]) + _ITEM <= last <= size:
        raise DamagedEntry("the last frame ends outside the object")


def _check_native(index: FrameIndex) -> None:
    n, bits, end = index.number_of_frames, index.bits_per_frame, index.header_end
    if index.encapsulated or (n and not bits) or (n * bits + 7) // 8 > index.size - end:
        raise DamagedEntry("native frames that do not fit the object")
    i = np.arange(n, dtype=np.int64)
    if not (
        np.array_equal(index.starts, end + (i * bits) // 8)
        and np.array_equal(index.stops, end + ((i + 1) * bits + 7) // 8)
    ):
        raise DamagedEntry("native frames not where their size puts them")


class _NotHeld(Exception):
    """A table lies beyond the header bytes the entry holds."""


def vouch(index: FrameIndex, parsed: ParsedHeader, held: bytes) -> None:
    """Check a persisted ``index`` against the header of the same entry.

    ``parsed`` is that header parsed, ``held`` the entry's header bytes (with the
    offset tables read after it). The fields the header gives must match, and the
    number of frames; where the header gives the frames (native Pixel Data, an
    Extended or Basic Offset Table that ``held`` holds) the index must be the one it
    gives (an end the table leaves unknown may be known). An index from a scan or a
    TIFF tile table is vouched for only by the fields: its frames' item headers are
    checked as each frame is read.

    Raises
    ------
    DamagedEntry
        If the header does not give this index.
    """
    hdr = parsed.header
    pixel_offset = parsed.size if hdr.pixel_data_offset is None else hdr.pixel_data_offset
    fields = (
        parsed.size,
        hdr.transfer_syntax_uid,
        parsed.header_end,
        hdr.pixel_keyword,
        hdr.encapsulated,
        pixel_offset,
    )
    stored = (
        index.size,
        index.transfer_syntax_uid,
        index.header_end,
        index.pixel_keyword,
        index.encapsulated,
        index.pixel_data_offset,
    )
    if fields != stored:
        raise DamagedEntry("index inconsistent with the header it was saved with")

    def fetch(start: int, stop: int) -> bytes:
        if stop > len(held):
            raise _NotHeld
        return held[start:stop]

    try:
        frames = 0 if hdr.pixel_data_offset is None else number_of_frames(parsed)
    except ValueError:  # typed DICOM errors are ValueErrors
        raise DamagedEntry("the header gives no number of frames") from None
    if frames != index.number_of_frames:
        raise DamagedEntry(f"{index.number_of_frames} frames indexed, the header has {frames}")
    try:
        given = index_from_tables(parsed, fetch)
    except _NotHeld:
        return  # a table beyond the bytes held: the fields and the count only
    except (ValueError, struct.error):
        raise DamagedEntry("the header gives no such index") from None
    if given is None:
        if index.offset_table not in ("scan", "tiff"):
            raise DamagedEntry("an index from a table the header does not have")
        return
    _same_frames(index, given)


def _same_frames(index: FrameIndex, given: FrameIndex) -> None:
    """``index`` is ``given``, but for a last end ``given`` leaves unknown."""
    same = (
        index.offset_table == given.offset_table
        and index.bits_per_frame == given.bits_per_frame
        and np.array_equal(index.starts, given.starts)
        and np.array_equal(index.stops[:-1], given.stops[:-1])
    )
    if same and index.number_of_frames:
        last = int(given.stops[-1])
        same = last in (UNKNOWN, int(index.stops[-1]))
    if not same:
        raise DamagedEntry("index differs from the one the header's table gives")

"""Locate the frames: a :class:`~hdfsspec.dicom.index.FrameIndex` from a parsed header.

Strategies, chosen in this order for encapsulated Pixel Data:

1. Extended Offset Table (with or without its lengths);
2. Basic Offset Table, when it has one entry per frame;
3. a scan of the fragment items, fetched in large windows, several concurrently,
   when both tables are missing (or the BOT does not match Number of Frames).
   Fragments are grouped into frames one-to-one, or on JPEG / JPEG 2000 start
   markers checked against Number of Frames; an ambiguous file is an error.

Native Pixel Data (including 1-bit packed, Float and Double Float Pixel Data)
is laid out arithmetically from the image attributes. Pure: no fsspec.
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom.uid import UID

from hdfsspec._log import get_logger
from hdfsspec._types import Fetch, FetchRanges
from hdfsspec.dicom.header import EXTENDED_OFFSET_TABLE, native_samples
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.dicom.parse import ParsedHeader, attr, int_attr, number_of_frames
from hdfsspec.dicom.tiff import read_tile_table, tiff_ifd_offset, tile_table_frames
from hdfsspec.errors import (
    FrameIndexError,
    OffsetTableError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)

__all__ = [
    "bot_beyond",
    "held_bot_index",
    "index_from_tables",
    "scanned_index",
    "tiff_index",
]

_log = get_logger(__name__)  # no object names here: the callers' records name them
_PIXEL_TAG = 0x7FE00010
_TRANSFER_SYNTAX_UID = 0x00020010
_NEWER_SYNTAXES = {  # in the standard, unknown to pydicom 3.0
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
}


def _native_index(parsed: ParsedHeader) -> FrameIndex:
    ds, hdr = parsed.dataset, parsed.header
    n = number_of_frames(parsed)
    rows = int_attr(ds, "Rows", None, parsed)
    cols = int_attr(ds, "Columns", None, parsed)
    samples = int_attr(ds, "SamplesPerPixel", None, parsed)  # Type 1: a frame's size
    bits = int_attr(ds, "BitsAllocated", None, parsed)
    photometric = str(attr(ds, "PhotometricInterpretation", "", parsed))
    samples = native_samples(samples, bits, photometric)
    frame_bits = rows * cols * samples * bits
    if frame_bits <= 0 < n:
        raise FrameIndexError(
            f"frames of {rows}x{cols}x{samples} pixels at {bits} bits hold no bytes",
            path=parsed.path,
            offset=hdr.pixel_data_offset,
            tag=_PIXEL_TAG,
        )
    start, length = hdr.pixel_value_offset, hdr.pixel_length
    if start + length > parsed.size:
        raise TruncatedDicomError(
            f"Pixel Data value of {length} bytes ends beyond the object ({parsed.size} bytes)",
            path=parsed.path,
            offset=hdr.pixel_data_offset,
            tag=_PIXEL_TAG,
        )
    needed = (n * frame_bits + 7) // 8
    if needed > length:
        raise FrameIndexError(
            f"Pixel Data holds {length} bytes but {n} frames of {rows}x{cols}x{samples} "
            f"at {bits} bits need {needed}",
            path=parsed.path,
            offset=hdr.pixel_data_offset,
            tag=_PIXEL_TAG,
        )
    i = np.arange(n, dtype=np.int64)
    starts = start + (i * frame_bits) // 8
    stops = start + ((i + 1) * frame_bits + 7) // 8
    return _index(parsed, "native", starts, stops, bits_per_frame=frame_bits)


def _index(parsed: ParsedHeader, kind, starts, stops, **extra) -> FrameIndex:
    hdr = parsed.header
    return FrameIndex(
        size=parsed.size,
        transfer_syntax_uid=hdr.transfer_syntax_uid,
        header_end=parsed.header_end,
        offset_table=kind,
        starts=starts,
        stops=stops,
        pixel_keyword=hdr.pixel_keyword,
        encapsulated=hdr.encapsulated,
        pixel_data_offset=hdr.pixel_data_offset
        if hdr.pixel_data_offset is not None
        else parsed.size,
        **extra,
    )


def _check_offsets(offsets: np.ndarray, parsed: ParsedHeader, what: str, tag: int) -> np.ndarray:
    """Validate relative frame offsets; unwrap a 32-bit BOT of Pixel Data over 4 GiB."""
    region = parsed.size - parsed.header_end
    if offsets.size and offsets[0] != 0:
        raise OffsetTableError(
            f"{what}: the first offset is {offsets[0]}, not 0",
            path=parsed.path,
            offset=parsed.header_end,
            tag=tag,
        )
    steps = np.diff(offsets)
    if what == "Basic Offset Table" and np.any(steps <= 0) and region > 2**32:
        steps = np.where(steps <= 0, steps + 2**32, steps)
        offsets = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
    bad = np.flatnonzero(np.diff(offsets) <= 0)
    if bad.size:
        raise OffsetTableError(
            f"{what}: offsets are not increasing (entry {int(bad[0]) + 1})",
            path=parsed.path,
            offset=parsed.header_end,
            tag=tag,
        )
    if offsets.size and offsets[-1] + 8 > region:
        raise OffsetTableError(
            f"{what}: frame {offsets.size - 1} starts at {int(offsets[-1])}, beyond the "
            f"{region} bytes of Pixel Data in the object",
            path=parsed.path,
            offset=parsed.header_end,
            tag=tag,
        )
    return offsets


def _eot_index(parsed: ParsedHeader, n: int) -> FrameIndex | None:
    hdr, prefix = parsed.header, parsed.prefix
    assert hdr.eot is not None
    pos, length = hdr.eot
    if length != 8 * n:
        return None  # inconsistent EOT: fall back to the BOT or a scan, as pydicom does
    offsets = np.frombuffer(prefix[pos : pos + length], dtype="<u8").astype(np.int64)
    offsets = _check_offsets(offsets, parsed, "Extended Offset Table", EXTENDED_OFFSET_TABLE)
    starts = parsed.header_end + offsets
    if hdr.eot_lengths is not None and hdr.eot_lengths[1] == 8 * n:
        lpos = hdr.eot_lengths[0]
        raw = np.frombuffer(prefix[lpos : lpos + 8 * n], dtype="<u8")
        lengths = np.minimum(raw, parsed.size).astype(np.int64)  # no wrap to negative
        stops = starts + 8 + lengths
        if np.any(stops[:-1] > starts[1:]) or (n and stops[-1] > parsed.size):
            raise OffsetTableError(
                "Extended Offset Table Lengths overlap the next frame or the end of the object",
                path=parsed.path,
                offset=lpos,
                tag=EXTENDED_OFFSET_TABLE + 1,
            )
    else:
        stops = np.append(starts[1:], UNKNOWN)
    return _index(parsed, "eot", starts, stops)


def _encapsulated_syntax(uid: str) -> bool:
    """Whether pydicom knows ``uid`` as an encapsulated transfer syntax (unknown: no)."""
    try:
        return bool(UID(uid).is_encapsulated)
    except ValueError:
        return False


def _check_syntax(parsed: ParsedHeader) -> None:
    """Refuse frames under a transfer syntax that says nothing of how they are laid out.

    pydicom's transfer syntaxes are known, and so are the standard's newer ones (JPEG
    XL, Deflated Image Frame Compression). Any other UID (a private one such as GE's
    big-endian pixels under an implicit little-endian header, or a damaged one) names
    no encoding: its frames could be read as bytes, but nothing could tell whether
    they are right, and pydicom would decode none.
    """
    uid = parsed.header.transfer_syntax_uid
    if uid in _NEWER_SYNTAXES:
        return
    try:
        UID(uid).is_encapsulated  # noqa: B018 - raises for a UID that is no transfer syntax
    except ValueError:
        at = parsed.prefix.find(b"\x02\x00\x10\x00UI")
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {uid!r} is not one pydicom knows: the layout and encoding "
            "of its frames are unknown",
            path=parsed.path,
            offset=max(at, 0),
            tag=_TRANSFER_SYNTAX_UID,
        ) from None


def index_from_tables(parsed: ParsedHeader, fetch: Fetch | None = None) -> FrameIndex | None:
    """The index when the header gives it (native, BOT, EOT); None when a scan is needed.

    ``fetch`` reads the part of a Basic Offset Table beyond the header bytes.
    """
    hdr = parsed.header
    if hdr.pixel_data_offset is None:
        return _index(parsed, "none", [], [])
    _check_syntax(parsed)
    if not hdr.encapsulated:
        if _encapsulated_syntax(hdr.transfer_syntax_uid):
            raise FrameIndexError(
                f"Pixel Data of defined length ({hdr.pixel_length} bytes) under the "
                f"encapsulated transfer syntax {hdr.transfer_syntax_uid}: its frames are "
                "items of an undefined-length value (PS3.5 A.4), not native bytes",
                path=parsed.path,
                offset=hdr.pixel_data_offset,
                tag=_PIXEL_TAG,
            )
        return _native_index(parsed)
    n = number_of_frames(parsed)
    if n == 0:
        return _index(parsed, "bot", [], [])
    _check_single_frame(parsed, n)
    if hdr.eot is not None:
        index = _eot_index(parsed, n)
        if index is not None:
            return index
    entries = (parsed.bot_span[1] - parsed.bot_span[0]) // 4
    bot = parsed.bot
    if bot is None and entries == n:
        bot = _read_bot(parsed, fetch)
    if bot is not None and len(bot) == n:
        offsets = _check_offsets(
            np.asarray(bot, dtype=np.int64), parsed, "Basic Offset Table", _PIXEL_TAG
        )
        starts = parsed.header_end + offsets
        return _index(parsed, "bot", starts, np.append(starts[1:], UNKNOWN))
    if bot:
        _log.debug("Basic Offset Table of %d entries for %d frames: not used", len(bot), n)
    return None


def _check_single_frame(parsed: ParsedHeader, n: int) -> None:
    """Refuse one frame whose offset table splits it: a scan would join every fragment
    into that frame, pydicom would take the table's first frame; either may be wrong."""
    if n != 1:
        return
    start, stop = parsed.bot_span
    tables = [("Basic Offset Table", (stop - start) // 4, start, _PIXEL_TAG)]
    eot = parsed.header.eot
    if eot is not None:
        tables.append(("Extended Offset Table", eot[1] // 8, eot[0], EXTENDED_OFFSET_TABLE))
    for name, entries, offset, tag in tables:
        if entries > 1:
            raise FrameIndexError(
                f"the {name} has {entries} entries but Number of Frames is 1: which of "
                "the two is wrong cannot be told",
                path=parsed.path,
                offset=offset,
                tag=tag,
            )


def held_bot_index(parsed: ParsedHeader) -> FrameIndex | None:
    """An index of the first frames, from the Basic Offset Table entries the header bytes hold.

    When the table is longer than the first request, its first entries are often
    enough (a 64 KiB request holds some 15,000): frames whose start and next start
    are held need no request for the table. None when nothing useful is held or the
    held entries do not check out (the whole table then decides).
    """
    start, stop = parsed.bot_span
    if parsed.bot is not None or (stop - start) // 4 != number_of_frames(parsed):
        return None
    held = (min(stop, len(parsed.prefix)) - start) // 4
    if held < 2:
        return None
    raw = np.frombuffer(parsed.prefix, dtype="<u4", count=held, offset=start).astype(np.int64)
    try:
        offsets = _check_offsets(raw, parsed, "Basic Offset Table", _PIXEL_TAG)
    except OffsetTableError:
        return None
    starts = parsed.header_end + offsets
    return _index(parsed, "bot", starts[:-1], starts[1:])


def bot_beyond(parsed: ParsedHeader) -> tuple[int, int] | None:
    """The bytes of the Basic Offset Table worth reading before a frame asks for them.

    When the table will be the index and the header bytes hold fewer than half of its
    entries, most frames need the rest of it: reading it at once saves their first
    read a round trip. When they hold most entries, most frames need no more of it,
    and it is read (one request) only if a frame beyond them is asked for. None also
    when the header bytes hold the whole table, when an Extended Offset Table is
    there, or when the table is not one entry a frame (a scan then decides).
    """
    start, stop = parsed.bot_span
    hdr = parsed.header
    if parsed.bot is not None or hdr.eot is not None or not hdr.encapsulated:
        return None
    n = number_of_frames(parsed)
    held = len(parsed.prefix)
    if n == 0 or (stop - start) // 4 != n or not start <= held < stop:
        return None
    return (held, stop) if (held - start) // 4 < n / 2 else None


def _read_bot(parsed: ParsedHeader, fetch: Fetch | None) -> tuple[int, ...]:
    """The Basic Offset Table entries: the bytes held, then the rest fetched."""
    start, stop = parsed.bot_span
    held = parsed.prefix[start:stop]
    if fetch is None:
        raise ValueError("the Basic Offset Table was not fetched with the header: give fetch")
    rest = fetch(start + len(held), stop)
    if len(rest) != stop - start - len(held):
        raise TruncatedDicomError(
            f"the Basic Offset Table ends at byte {stop}, but only "
            f"{start + len(held) + len(rest)} bytes could be read",
            path=parsed.path,
            offset=start + len(held) + len(rest),
            tag=_PIXEL_TAG,
        )
    return struct.unpack(f"<{(stop - start) // 4}L", held + rest)


def tiff_index(parsed: ParsedHeader, fetch: Fetch, fetch_ranges: FetchRanges) -> FrameIndex | None:
    """The index from the TIFF tile table of a dual DICOM-TIFF file, if it checks out.

    The preamble's TIFF header leads to the first IFD (one request) and its tile
    offsets and byte counts (one more round); the table must describe one item per
    frame, back to back, from the first byte of the Pixel Data items (see
    :func:`hdfsspec.dicom.tiff.tile_table_frames`). Anything else gives None (scan).
    Each frame's item header is checked again when the frame is read.
    """
    hdr = parsed.header
    header = tiff_ifd_offset(parsed.prefix[:16])
    if header is None or not hdr.encapsulated or header.ifd_offset >= parsed.size:
        return None
    n = number_of_frames(parsed)
    table = read_tile_table(fetch, fetch_ranges, parsed.size, header, path=parsed.path, expected=n)
    if table is None or n == 0:
        _log.debug("a TIFF header in the preamble, but no tile table of %d tiles: not used", n)
        return None
    first = int(table.offsets[0]) - 8 if table.offsets.size else -1
    first_item = parsed.prefix[first : first + 8] if 0 <= first <= len(parsed.prefix) - 8 else None
    frames = tile_table_frames(
        table, header_end=parsed.header_end, size=parsed.size, first_item=first_item
    )
    if frames is None or int(frames[0][0]) != parsed.header_end:
        _log.debug("the TIFF tile table does not match the Pixel Data items: not used")
        return None  # the first frame must be the first item after the Basic Offset Table
    return _index(parsed, "tiff", frames[0], frames[1])


def scanned_index(
    parsed: ParsedHeader, starts: np.ndarray, stops: np.ndarray, *, delimited: bool = True
) -> FrameIndex:
    """An index of frames found by a scan (all of them, or the first ones of a partial scan).

    A whole scan that met no Sequence Delimitation Item (``delimited`` False) cannot
    vouch for its last frame: the object may have been cut at an item boundary,
    losing that frame's last fragments. Its end is left unknown, so that reading it
    walks its items to the delimiter, which raises :class:`TruncatedDicomError`
    (:func:`hdfsspec.dicom.fragment_items.find_items_end`); the other frames read as usual.
    """
    if not delimited and len(stops):
        stops = np.array(stops, dtype=np.int64)
        stops[-1] = UNKNOWN
    return _index(parsed, "scan", starts, stops)

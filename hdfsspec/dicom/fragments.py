"""What the first and last bytes of fragments say, and how a scan's fragments make frames.

Encapsulated Pixel Data without offset table holds fragments, not frames. A JPEG
family frame begins with a start marker (SOI FFD8, JPEG 2000 SOC FF4F) and ends with
an end marker (EOI / EOC, FFD9), then at most zero padding; an RLE frame is one
fragment that begins with an RLE header. :func:`group_fragments` groups the fragments
of a whole scan (:class:`ItemScan`) into frames: one-to-one, or on the start markers
checked against Number of Frames (or, when a continuation fragment happens to begin
with a start marker, on the markers that follow an end marker). Pure: bytes in,
arrays out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hdfsspec.errors import FrameIndexError

if TYPE_CHECKING:
    from hdfsspec.dicom.parse import ParsedHeader

__all__ = [
    "END_MARKER",
    "START_MARKERS",
    "TAIL",
    "ItemScan",
    "ends_frame",
    "group_fragments",
    "rle_frame_head",
]

START_MARKERS = (b"\xff\xd8", b"\xff\x4f")  # JPEG / JPEG-LS SOI, JPEG 2000 SOC
END_MARKER = b"\xff\xd9"  # JPEG / JPEG-LS EOI, JPEG 2000 EOC
TAIL = 8
"""Bytes of a fragment's end looked at for its end marker (then zero padding)."""
_RLE_HEADER = struct.Struct("<LL")  # an RLE frame's number of segments, first segment offset
_PIXEL_TAG = 0x7FE00010


def ends_frame(tail: bytes) -> bool:
    """Whether the last bytes of a JPEG-family fragment end a frame: FFD9, then zeros."""
    return bytes(tail).rstrip(b"\x00").endswith(END_MARKER)


def rle_frame_head(head: bytes) -> bool:
    """Whether an item's first 16 bytes (header, then value) begin an RLE frame:
    1-15 segments, the first at offset 64."""
    if len(head) != 16:
        return False
    segments, first = _RLE_HEADER.unpack_from(head, 8)
    return 1 <= segments <= 15 and first == 64


@dataclass(frozen=True)
class ItemScan:
    """Fragment items found by a scan: absolute offsets, value lengths, first bytes."""

    offsets: list[int]
    lengths: list[int]
    heads: list[bytes]
    end: int
    requests: int
    bytes_fetched: int
    delimited: bool = True
    ended: list[bool] | None = None
    """Per fragment, whether the one before it ends with an end marker (JPEG family)."""


def _continued(scan: ItemScan, marked: np.ndarray) -> bool:
    """Whether a fragment after the first continues a frame (JPEG family walks only)."""
    if scan.ended is None or marked.size < 2:
        return False
    ended = np.asarray(scan.ended, dtype=bool)
    return bool(np.any(~marked[1:] & ~ended[1:]))


def _check_single(scan: ItemScan, marked: np.ndarray, parsed: ParsedHeader) -> None:
    """Refuse one frame whose fragments hold several (JPEG family): a fragment that
    begins with a start marker after one that ends with an end marker begins a new
    codestream, so Number of Frames (1, or absent) and the fragments disagree."""
    if scan.ended is None or marked.size < 2:
        return
    again = np.flatnonzero(marked[1:] & np.asarray(scan.ended, dtype=bool)[1:]) + 1
    if again.size:
        raise FrameIndexError(
            f"Number of Frames is 1, but fragment {int(again[0])} of {marked.size} begins a "
            "new codestream after one ended: the frames cannot be told apart",
            path=parsed.path,
            offset=int(scan.offsets[int(again[0])]),
            tag=_PIXEL_TAG,
        )


def _check_ends(scan: ItemScan, first: np.ndarray, parsed: ParsedHeader) -> None:
    """Refuse frames whose start and end markers disagree: a frame that begins after a
    fragment with no end marker, where other fragments do end with one (a damaged
    frame, or a frame lost its end; pydicom groups on the end markers). An encoder
    that ends no fragment with a bare end marker gives no such evidence."""
    if scan.ended is None or first.size < 2:
        return
    ended = np.asarray(scan.ended, dtype=bool)
    if not ended[1:].any():
        return
    unended = first[1:][~ended[first[1:]]]
    if unended.size:
        raise FrameIndexError(
            f"fragment {int(unended[0])} begins a frame with a start marker, but the "
            "fragment before it does not end with an end marker (FFD9): the frames "
            "cannot be told apart without an offset table",
            path=parsed.path,
            offset=int(scan.offsets[int(unended[0])]),
            tag=_PIXEL_TAG,
        )


def group_fragments(scan: ItemScan, n: int, parsed: ParsedHeader) -> tuple[np.ndarray, np.ndarray]:
    """Return frame ``(starts, stops)`` from the fragments of a scan.

    As many fragments as frames are one a frame, unless (JPEG family) one of them
    continues a frame: it begins with no start marker and the fragment before it
    ends with no end marker (an object that lost fragments, cut short, or that holds
    fewer frames than it says). A frame of another form (a boxed JPEG 2000 frame)
    after a complete one is still a frame.
    """
    offsets = np.asarray(scan.offsets, dtype=np.int64)
    ends = offsets + 8 + np.asarray(scan.lengths, dtype=np.int64)
    count = offsets.size
    marked = np.array([h[8:10] in START_MARKERS for h in scan.heads], dtype=bool)
    if count == n and not _continued(scan, marked):
        return offsets, ends
    if n == 1 and count > 0:
        _check_single(scan, marked, parsed)
        return offsets[:1], ends[-1:]
    if count > n and marked[0]:
        if int(marked.sum()) != n and scan.ended is not None:  # a marker inside a frame
            marked &= np.asarray(scan.ended, dtype=bool)  # those after an end marker
        if int(marked.sum()) == n:
            first = np.flatnonzero(marked)
            _check_ends(scan, first, parsed)
            last = np.append(first[1:] - 1, count - 1)
            return offsets[first], ends[last]
    raise FrameIndexError(
        f"cannot split {count} fragments into {n} frames ({int(marked.sum())} fragments "
        "begin with a JPEG or JPEG 2000 start marker) and there is no offset table",
        path=parsed.path,
        offset=parsed.header_end,
        tag=_PIXEL_TAG,
    )

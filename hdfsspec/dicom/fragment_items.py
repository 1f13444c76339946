"""Pure helpers over fragment items held in memory (no fsspec, no cache state).

* :func:`join_fragments`: the encoded bytes of one frame from the block holding its items;
* :func:`find_items_end`: where a run of items ends (the last frame of a file whose only
  table is a Basic Offset Table), fetching more through ``fetch`` as needed;
* :func:`slice_run`: bytes ``[start, stop)`` from contiguous pieces fetched by a scan.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hdfsspec._types import Fetch
from hdfsspec.dicom.header import ITEM, SEQUENCE_DELIMITER
from hdfsspec.errors import DicomFormatError, OffsetTableError, TruncatedDicomError

__all__ = ["find_items_end", "item_header", "join_fragments", "slice_run"]

_PIXEL_TAG = 0x7FE00010


def item_header(
    data: bytes,
    rel: int,
    pos: int,
    size: int,
    *,
    path: str | None,
    error: type[DicomFormatError],
    what: str,
) -> tuple[int, int]:
    """Tag and length of the item header at ``data[rel:]`` (absolute offset ``pos``).

    The sequence delimiter is returned as is; any other tag raises ``error`` (the
    kind of table or scan that led there decides which), and an item ending beyond
    ``size`` raises :class:`TruncatedDicomError`.
    """
    group, elem, length = struct.unpack("<HHL", data[rel : rel + 8])
    tag = group << 16 | elem
    if tag == SEQUENCE_DELIMITER:
        return tag, length
    if tag != ITEM:
        raise error(
            f"{what}: expected a fragment item (FFFE,E000) or the sequence delimiter, "
            f"found {tag:08X}",
            path=path,
            offset=pos,
            tag=_PIXEL_TAG,
        )
    if pos + 8 + length > size:
        raise TruncatedDicomError(
            f"{what}: fragment item of {length} bytes ends beyond the end of the object",
            path=path,
            offset=pos,
            tag=_PIXEL_TAG,
        )
    return tag, length


def join_fragments(
    data: bytes,
    base: int,
    start: int,
    stop: int,
    *,
    frame: int,
    path: str | None,
    single: bool = False,
    padded_odd: bool = False,
    size: int | None = None,
) -> bytes:
    """Join the fragment values of the items in ``[start, stop)``; ``data`` starts at ``base``.

    ``data`` should also hold the 8 bytes after ``stop`` (the frame's block does): they
    must be the next item's header or the sequence delimiter. With the object's
    ``size``, a frame that ends fewer than 8 bytes before the object's end is refused
    (no delimiter: the object may have been cut after it).

    With ``single`` the range must be one item (a table that says each frame is one
    fragment: a dual DICOM-TIFF file's tiles). With ``padded_odd`` (a range from
    Extended Offset Table Lengths) an odd range may be one item padded to even length,
    one byte past ``stop``: the frame is then the odd length the table gives, as pydicom
    reads it (the padding byte is not part of the frame).

    Raises
    ------
    OffsetTableError
        When no item starts where the offset table says, or an item overruns ``stop``,
        or (``single``) the range holds several items, or no item or delimiter follows.
    TruncatedDicomError
        When the object ends after the frame without the sequence delimiter.
    """
    if stop < start + 8:
        raise OffsetTableError(
            f"frame {frame}: {stop - start} bytes, too few for a fragment item",
            path=path,
            offset=start,
            tag=_PIXEL_TAG,
        )
    rel = start - base
    group, elem, length = struct.unpack_from("<HHL", data, rel)
    if (group << 16 | elem) == ITEM and start + 8 + length == stop:  # one item: most frames
        _check_frame_end(data, base, stop, size, frame=frame, path=path)
        return data[rel + 8 : rel + 8 + length]
    parts, pos = [], start
    while pos < stop:
        rel = pos - base
        group, elem, length = struct.unpack("<HHL", data[rel : rel + 8])
        tag = group << 16 | elem
        if (
            padded_odd
            and tag == ITEM
            and pos == start
            and (stop - start) % 2
            and (pos + 8 + length == stop + 1)
        ):
            return data[rel + 8 : stop - base]  # one item, its padding byte past the frame
        if tag != ITEM or pos + 8 + length > stop:
            raise OffsetTableError(
                f"frame {frame}: no fragment item where the offset table puts one "
                f"(found tag {group:04X}{elem:04X}, length {length})",
                path=path,
                offset=pos,
                tag=_PIXEL_TAG,
            )
        parts.append(data[rel + 8 : rel + 8 + length])
        pos += 8 + length
        if single and pos < stop:
            raise OffsetTableError(
                f"frame {frame}: the table gives one fragment a frame, the range holds more",
                path=path,
                offset=pos,
                tag=_PIXEL_TAG,
            )
    _check_frame_end(data, base, stop, size, frame=frame, path=path)
    return b"".join(parts)


def _check_frame_end(
    data: bytes, base: int, stop: int, size: int | None, *, frame: int, path: str | None
) -> None:
    """Check that the next item or the sequence delimiter follows a frame ending at ``stop``.

    A frame's last item is vouched for by what follows it: an item whose length was
    damaged, or bytes lost inside it, end it elsewhere than the table says; an object
    cut after it (an interrupted upload) has no delimiter, and the frame may have lost
    fragments. Unchecked where ``data`` (the frame's block) does not hold those bytes
    and the object (``size``) does not end there.
    """
    rel = stop - base
    if rel + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, rel)
        if (group << 16 | elem) in (ITEM, SEQUENCE_DELIMITER):
            return
        raise OffsetTableError(
            f"frame {frame}: the item there ends at byte {stop}, where neither the next "
            f"item nor the sequence delimiter begins (found tag {group:04X}{elem:04X})",
            path=path,
            offset=stop,
            tag=_PIXEL_TAG,
        )
    if size is not None and stop + 8 > size:
        raise TruncatedDicomError(
            f"frame {frame}: the object ends {size - stop} bytes after it, without the "
            "Sequence Delimitation Item (FFFE,E0DD): the frame may be cut short (an "
            "interrupted upload) and cannot be vouched for",
            path=path,
            offset=size,
            tag=_PIXEL_TAG,
        )


def check_next_item(
    data: bytes, base: int, at: int, length: int, *, frame: int, path: str | None
) -> None:
    """Check that the item after a frame (at ``at``, if ``data`` holds its header) is
    the next frame's single fragment, ``length`` bytes long."""
    rel = at - base
    if rel < 0 or rel + 8 > len(data):
        return
    group, elem, found = struct.unpack("<HHL", data[rel : rel + 8])
    if (group << 16 | elem) != ITEM or found != length:
        raise OffsetTableError(
            f"frame {frame + 1}: the table gives one fragment of {length} bytes, the item "
            f"there is tag {group:04X}{elem:04X} of {found}",
            path=path,
            offset=at,
            tag=_PIXEL_TAG,
        )


def find_items_end(
    fetch: Fetch, start: int, size: int, held: bytes, guess: int, *, path: str | None
) -> tuple[int, bytes]:
    """Walk the items from ``start`` to the sequence delimiter.

    ``held`` are bytes from ``start`` already in memory; more are fetched in growing
    requests from ``guess`` bytes. Returns the offset where the items end and every
    byte read from ``start``.

    Raises
    ------
    TruncatedDicomError
        When the object ends before the delimiter: an item cut off, or no delimiter
        after the last item (the last frame may have lost fragments: a missing
        delimiter is what a cut at an item boundary leaves).
    """
    data, pos = held, start
    while True:
        rel = pos - start
        if rel + 8 > len(data):
            if pos + 8 > size:
                if pos == size:
                    raise TruncatedDicomError(
                        "the object ends after a fragment item, without the Sequence "
                        "Delimitation Item (FFFE,E0DD): the last frame may be cut short "
                        "(an interrupted upload) and cannot be vouched for",
                        path=path,
                        offset=pos,
                        tag=_PIXEL_TAG,
                    )
                raise TruncatedDicomError(
                    "last frame item cut off by the end of the object",
                    path=path,
                    offset=pos,
                    tag=_PIXEL_TAG,
                )
            stop = min(size, max(start + len(data) + guess, pos + 8))
            data += fetch(start + len(data), stop)
            guess *= 2
            continue
        tag, length = item_header(
            data, rel, pos, size, path=path, error=OffsetTableError, what="last frame"
        )
        if tag == SEQUENCE_DELIMITER:
            return pos, data
        pos += 8 + length


def slice_run(pieces: Sequence[tuple[int, bytes]], start: int, stop: int) -> bytes | None:
    """Bytes ``[start, stop)`` from sorted, contiguous ``(offset, bytes)`` pieces, or None."""
    parts, pos = [], start
    for base, data in pieces:
        end = base + len(data)
        if base <= pos < end:
            parts.append(data[pos - base : min(stop, end) - base])
            pos = min(stop, end)
            if pos >= stop:
                return b"".join(parts)
    return None

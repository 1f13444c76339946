"""The encoded bytes of frames, cut out of their blocks (pure: no request).

A frame's block (:func:`~hdfsspec.io.planning.block_range`) is the exact byte range of
its items plus the next item's header. Native frames are a slice of it; encapsulated
ones are their fragment values joined (:func:`~hdfsspec.dicom.fragment_items.join_fragments`,
which checks every item header). A tile of a dual DICOM-TIFF file is one item, and the
next tile's item header, held in the block too, is checked against the table.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

import numpy as np

from hdfsspec.dicom.fragment_items import check_next_item, join_fragments
from hdfsspec.dicom.header import ITEM, SEQUENCE_DELIMITER
from hdfsspec.dicom.index import UNKNOWN, FrameIndex

__all__ = ["frame_payload", "frames_payloads"]

Block = tuple[int, bytes]

_ITEM_TAG = struct.pack("<HH", ITEM >> 16, ITEM & 0xFFFF)  # (FFFE,E000) as stored
_DELIMITER_TAG = struct.pack("<HH", SEQUENCE_DELIMITER >> 16, SEQUENCE_DELIMITER & 0xFFFF)
_LENGTH = struct.Struct("<L").unpack_from


def frame_payload(
    index: FrameIndex,
    frame: int,
    block: Block,
    *,
    path: str | None,
    size: int,
    tiles: bool = True,
) -> bytes:
    """The encoded bytes of ``frame`` from its block (see :func:`frames_payloads`);
    ``tiles=False`` joins the items of a TIFF-table object without the one-item checks."""
    start, stop = index.frame_range(frame)
    base, data = block
    if not index.encapsulated:
        return data[start - base : stop - base]
    single = tiles and index.offset_table == "tiff"
    last = index.number_of_frames - 1
    after = index.frame_range(min(frame + 1, last)) if single else (0, UNKNOWN)
    then = after[1] - after[0] - 8 if single and frame != last else None
    if _one_item(data, start - base, stop - base, then):
        return data[start - base + 8 : stop - base]
    return _join(index, frame, start, stop, after, block, path, size, single)


def frames_payloads(
    index: FrameIndex,
    frames: list[int],
    blocks: Mapping[int, Block],
    *,
    path: str | None,
    size: int,
) -> list[bytes]:
    """The encoded bytes of ``frames`` (0-based, their blocks in ``blocks``), in order."""
    if len(frames) == 1 or not index.encapsulated:
        return [frame_payload(index, f, blocks[f], path=path, size=size) for f in frames]
    chosen = np.asarray(frames, dtype=np.int64)
    starts, stops = index.starts[chosen].tolist(), index.stops[chosen].tolist()
    single = index.offset_table == "tiff"  # a tile is one item
    last = index.number_of_frames - 1
    nexts: Iterable[tuple[int, int]] = [(0, UNKNOWN)] * len(frames)
    if single:  # a tile's next item, checked in its block too
        after = np.minimum(chosen + 1, last)
        nexts = zip(index.starts[after].tolist(), index.stops[after].tolist(), strict=True)
    out = []
    for f, start, stop, nxt in zip(frames, starts, stops, nexts, strict=True):
        block = blocks[f]
        base, data = block
        # the next tile's item length the table gives (None: unchecked, not a tile's)
        then = nxt[1] - nxt[0] - 8 if single and f != last else None
        if _one_item(data, start - base, stop - base, then):
            out.append(data[start - base + 8 : stop - base])
        else:  # several items, or anything unusual: the careful way, which says what
            out.append(_join(index, f, start, stop, nxt, block, path, size, single))
    return out


def _one_item(data: bytes, rel: int, end: int, then: int | None) -> bool:
    """Whether ``data[rel:end]`` is one whole item followed by the next item's header
    (of ``then`` bytes where given: a tile's, which the delimiter cannot follow) or the
    sequence delimiter: the usual frame, every check of :func:`_join` passed at once."""
    if rel < 0 or end + 8 > len(data) or data[rel : rel + 4] != _ITEM_TAG:
        return False
    if _LENGTH(data, rel + 4)[0] != end - rel - 8:
        return False
    following = data[end : end + 4]
    if following == _ITEM_TAG:
        return then is None or _LENGTH(data, end + 4)[0] == then
    return following == _DELIMITER_TAG and then is None


def _join(
    index: FrameIndex,
    frame: int,
    start: int,
    stop: int,
    after: tuple[int, int],
    block: Block,
    path: str | None,
    size: int,
    single: bool,
) -> bytes:
    """Join the fragments of one encapsulated frame; check the next tile's item."""
    base, data = block
    out = join_fragments(
        data,
        base,
        start,
        stop,
        frame=frame,
        path=path,
        single=single,
        padded_odd=index.offset_table == "eot",
        size=size,
    )
    a, b = after
    if frame < index.number_of_frames - 1 and b != UNKNOWN:  # the next tile's item, held too
        check_next_item(data, base, a, b - a - 8, frame=frame, path=path)
    return out

"""Frame offsets from the TIFF tile table of dual-personality DICOM-TIFF files.

In a dual-personality file (D. Clunie, J Pathol Inform 2019;10:12) the 128-byte DICOM
preamble begins with a TIFF header whose first IFD describes the tiled image: each
TileOffsets (or StripOffsets) entry is the first byte of a fragment item *value* of the
encapsulated Pixel Data, one fragment per frame, in frame order. Without Basic or
Extended Offset Table that is a frame index for two round trips instead of a scan.
:func:`tiff_ifd_offset` recognises the header, :func:`read_tile_table` fetches the
table, :func:`tile_table_frames` verifies it against the item layout.

Nothing in the TIFF is trusted: every count is bounded by the object size before any
allocation or request, and anything inconsistent gives ``None`` (the caller then scans
the items). Pure: I/O only through the ``fetch`` callables, no fsspec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hdfsspec._types import Fetch, FetchRanges, KiB
from hdfsspec.errors import TruncatedDicomError

__all__ = ["TiffHeader", "TileTable", "read_tile_table", "tiff_ifd_offset", "tile_table_frames"]

IFD_WINDOW = 4 * KiB  # fetched at the IFD offset: any ordinary IFD fits
TRAILING = 1024 * KiB
"""An IFD this close to the end of the object is fetched with everything after it: the
tile arrays of a dual DICOM-TIFF file follow its IFD in the trailing padding."""
MAX_GAP = 64 * KiB  # the offset and count arrays are one range when at most this far apart
MAX_ENTRIES = 0xFFFF  # largest IFD accepted (the classic TIFF limit, for BigTIFF too)
_ORDERS: dict[bytes, Literal["<", ">"]] = {b"II": "<", b"MM": ">"}
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
_ELEMENT = {3: "u2", 4: "u4", 16: "u8"}  # SHORT, LONG, LONG8
_PAIRS = ((324, 325), (273, 279))  # TileOffsets/TileByteCounts, StripOffsets/StripByteCounts


@dataclass(frozen=True)
class TiffHeader:
    """The TIFF header at the start of an object.

    Attributes
    ----------
    byteorder : {"<", ">"}
        ``"<"`` for ``II`` (little endian), ``">"`` for ``MM``.
    bigtiff : bool
        Whether it is a BigTIFF header (64-bit offsets and counts).
    ifd_offset : int
        Absolute offset of the first IFD.
    """

    byteorder: Literal["<", ">"]
    bigtiff: bool
    ifd_offset: int


@dataclass(frozen=True, eq=False)
class TileTable:
    """Tile (or strip) offsets and byte counts of the first IFD.

    Attributes
    ----------
    offsets, counts : numpy.ndarray of uint64
        Absolute offset and byte count of every tile, as stored (read-only).
    requests : int
        Number of requests reading the table cost.
    """

    offsets: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    requests: int

    def __post_init__(self) -> None:
        for name in ("offsets", "counts"):
            arr = np.array(getattr(self, name), dtype=np.uint64).reshape(-1)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)


def tiff_ifd_offset(prefix: bytes) -> TiffHeader | None:
    """Recognise a TIFF header at the start of ``prefix`` (e.g. the DICOM preamble).

    Returns ``None`` unless ``prefix`` starts with a classic (``II*\\0`` + uint32) or
    BigTIFF (``II+\\0``, 8, 0 + uint64) header, in either byte order, whose IFD offset
    lies after the header itself: an all-zero preamble is not TIFF.
    """
    order = _ORDERS.get(bytes(prefix[:2]))
    if order is None or len(prefix) < 8:
        return None
    (magic,) = struct.unpack(order + "H", prefix[2:4])
    if magic == 42:
        (offset,), head = struct.unpack(order + "L", prefix[4:8]), 8
    elif magic == 43 and len(prefix) >= 16:
        bytesize, zero, offset = struct.unpack(order + "HHQ", prefix[4:16])
        if (bytesize, zero) != (8, 0):
            return None
        head = 16
    else:
        return None
    return TiffHeader(order, magic == 43, offset) if offset >= head else None


def _checked(data: bytes, start: int, stop: int, path: str | None) -> bytes:
    if len(data) != stop - start:
        raise TruncatedDicomError(
            f"TIFF tile table: asked for bytes {start}-{stop} but received {len(data)} bytes; "
            "the object is shorter than its reported size or changed while being read",
            path=path,
            offset=start + min(len(data), stop - start),
        )
    return data


def read_tile_table(
    fetch: Fetch,
    fetch_ranges: FetchRanges,
    size: int,
    header: TiffHeader,
    *,
    path: str | None = None,
    expected: int | None = None,
) -> TileTable | None:
    """Read the tile (or strip) offsets and byte counts of the first IFD.

    Cost: one ``fetch`` of up to :data:`IFD_WINDOW` bytes at the IFD (to the end of the
    object when that is at most :data:`TRAILING` bytes away; a second one only
    for an IFD longer than that), then at most one ``fetch_ranges`` call for the arrays
    that are neither inline in their entry nor inside the window: one range, or two
    when they are more than :data:`MAX_GAP` apart. Nothing beyond ``size`` is requested.

    Parameters
    ----------
    fetch : callable
        ``fetch(start, stop) -> bytes``.
    fetch_ranges : callable
        ``fetch_ranges([(start, stop), ...]) -> list[bytes]``, concurrent if possible.
    size : int
        Object size in bytes.
    header : TiffHeader
        Output of :func:`tiff_ifd_offset`.
    path : str, optional
        Name of the object, for error messages.
    expected : int, optional
        Number of frames: a table of any other length gives ``None`` before its
        arrays are fetched.

    Returns
    -------
    TileTable or None
        ``None`` without a usable table: tags missing, types other than SHORT, LONG,
        LONG8, lengths differing, IFD or arrays out of the object, too many entries.

    Raises
    ------
    TruncatedDicomError
        When a fetch returns fewer bytes than asked (the object shrank).
    """
    order, big = header.byteorder, header.bigtiff
    head, esize, inline = (8, 20, 8) if big else (2, 12, 4)
    ptr = order + ("u8" if big else "u4")  # offsets and counts of entries
    start = header.ifd_offset
    if start + head > size:
        return None
    stop = size if size - start <= TRAILING else min(size, start + IFD_WINDOW)
    data = _checked(fetch(start, stop), start, stop, path)
    requests = 1
    n = int(np.frombuffer(data, order + ("u8" if big else "u2"), 1)[0])
    end = start + head + n * esize
    if not 0 < n <= MAX_ENTRIES or end > size:
        return None
    if end > stop:
        data += _checked(fetch(stop, end), stop, end, path)
        requests += 1
    kinds = np.dtype(
        [("tag", order + "u2"), ("type", order + "u2"), ("count", ptr), ("value", f"V{inline}")]
    )
    entries = np.frombuffer(data, kinds, n, head)
    found = {int(t): k for k, t in enumerate(entries["tag"])}
    pair = next((p for p in _PAIRS if p[0] in found and p[1] in found), None)
    if pair is None:
        return None
    count = int(entries["count"][found[pair[0]]])
    if count != int(entries["count"][found[pair[1]]]) or count == 0:
        return None
    if expected is not None and count != expected:
        return None  # before fetching the arrays
    wanted: list[tuple[np.dtype, int, int]] = []  # dtype, absolute start and stop of each array
    for k in (found[pair[0]], found[pair[1]]):
        kind = _ELEMENT.get(int(entries["type"][k]))
        if kind is None:
            return None
        dtype = np.dtype(order + kind)
        nbytes = count * dtype.itemsize
        if nbytes <= inline:  # the value itself, in the entry
            at = start + head + k * esize + esize - inline
        else:
            at = int(np.frombuffer(entries["value"][k].tobytes(), ptr)[0])
            if at + nbytes > size:
                return None
        wanted.append((dtype, at, at + nbytes))
    have = start + len(data)
    missing = sorted((a, b) for _, a, b in wanted if not start <= a < b <= have)
    if len(missing) == 2 and missing[1][0] - missing[0][1] <= MAX_GAP:
        missing = [(missing[0][0], max(missing[0][1], missing[1][1]))]
    pieces = [(start, data)]
    if missing:
        fetched = fetch_ranges(missing)
        requests += len(missing)
        for (a, b), piece in zip(missing, fetched, strict=True):
            pieces.append((a, _checked(piece, a, b, path)))
    arrays = []
    for dtype, a, b in wanted:
        base, piece = next((s, p) for s, p in reversed(pieces) if s <= a and b <= s + len(p))
        arrays.append(np.frombuffer(piece, dtype, (b - a) // dtype.itemsize, a - base))
    return TileTable(arrays[0], arrays[1], requests)


def tile_table_frames(
    table: TileTable, *, header_end: int, size: int, first_item: bytes | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Check a tile table against the DICOM item layout; frame ranges or ``None``.

    Accepted only if it describes back-to-back fragment items, one per frame: the first
    item header at or after ``header_end``, no empty tile, each item directly followed by
    the next (``offsets[i] + counts[i]``, rounded up to even for the padding byte, equals
    ``offsets[i + 1] - 8``: offsets increase, items do not overlap, no other item lies
    between two tiles), the last one ending within ``size``. Vectorised (1e6 tiles: ms).

    Parameters
    ----------
    table : TileTable
        Output of :func:`read_tile_table`.
    header_end : int
        First byte after the Basic Offset Table item.
    size : int
        Object size in bytes.
    first_item : bytes, optional
        The 8 bytes at ``offsets[0] - 8``, if the caller holds them: they must be an item
        tag whose length is ``counts[0]`` rounded up to even.

    Returns
    -------
    (starts, stops) : tuple of numpy.ndarray of int64, or None
        ``starts = offsets - 8`` (the item header), ``stops`` the end of the item value
        (``offsets + counts`` rounded up to even), as in :class:`~hdfsspec.dicom.index.FrameIndex`.
        ``None`` when anything does not hold: the caller falls back to scanning the items.

    Notes
    -----
    This proves the table consistent, not the DICOM bytes: the caller must still check
    each item header (tag, length ``stops[i] - starts[i] - 8``) when it fetches a frame,
    and the Sequence Delimiter (FFFE,E0DD) after the last one, before serving bytes.
    """
    offsets, counts = table.offsets, table.counts
    n = offsets.shape[0]
    if n == 0 or counts.shape != offsets.shape or offsets.max() > size or counts.max() > size:
        return None  # also keeps the int64 arithmetic below from overflowing
    off, cnt = offsets.astype(np.int64), counts.astype(np.int64)
    starts = off - 8
    stops = off + cnt + (cnt & 1)
    if starts[0] < header_end or stops[-1] > size or not np.all(cnt > 0):
        return None
    if not np.array_equal(stops[:-1], starts[1:]):
        return None
    if first_item is not None and (
        len(first_item) != 8
        or first_item[:4] != _ITEM
        or int.from_bytes(first_item[4:8], "little") != int(stops[0] - off[0])
    ):
        return None
    return starts, stops

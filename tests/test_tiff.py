"""TIFF tile tables of dual-personality DICOM-TIFF files: header, IFD, budget, verification."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pydicom
import pytest

from hdfsspec import TruncatedDicomError
from hdfsspec.cache.whole_index import build_index, scan_items
from hdfsspec.dicom import tiff
from hdfsspec.dicom.fragments import group_fragments
from hdfsspec.dicom.frame_locations import scanned_index
from hdfsspec.dicom.parse import number_of_frames, parse_header
from hdfsspec.dicom.tiff import (
    IFD_WINDOW,
    MAX_GAP,
    TiffHeader,
    TileTable,
    read_tile_table,
    tiff_ifd_offset,
    tile_table_frames,
)
from hdfsspec.testing import build_encapsulated, build_slide, fake_jpeg_frames, jpeg_tiles

SHORT, LONG, SSHORT, LONG8 = 3, 4, 8, 16
_CODE = {SHORT: "H", LONG: "L", SSHORT: "h", LONG8: "Q"}


def craft(size, entries, *, order="<", big=False, ifd_at=16, at=None):
    """``size`` bytes: a TIFF header, one IFD at ``ifd_at`` with ``(tag, type, values)`` entries.

    Values that do not fit in their entry go to ``at[tag]``, or one after the other
    right after the IFD.
    """
    buf = bytearray(size)
    mark = b"II" if order == "<" else b"MM"
    if big:
        buf[:16] = mark + struct.pack(order + "HHHQ", 43, 8, 0, ifd_at)
    else:
        buf[:8] = mark + struct.pack(order + "HL", 42, ifd_at)
    head, esize, inline, ptr = (8, 20, 8, "Q") if big else (2, 12, 4, "L")
    buf[ifd_at : ifd_at + head] = struct.pack(order + ("Q" if big else "H"), len(entries))
    after = ifd_at + head + len(entries) * esize + inline
    at = at or {}
    for k, (tag, typ, values) in enumerate(entries):
        raw = struct.pack(f"{order}{len(values)}{_CODE[typ]}", *values)
        if len(raw) <= inline:
            value = raw.ljust(inline, b"\x00")
        else:
            where = at.get(tag, after)
            after += 0 if tag in at else len(raw)
            buf[where : where + len(raw)] = raw
            value = struct.pack(order + ptr, where)
        pos = ifd_at + head + k * esize
        buf[pos : pos + esize] = struct.pack(order + "HH" + ptr, tag, typ, len(values)) + value
    return bytes(buf)


class Store:
    """In-memory object whose fetch functions count calls and refuse to read past ``size``."""

    def __init__(self, blob, size=None):
        self.blob, self.size = blob, len(blob) if size is None else size
        self.fetches, self.range_calls = [], []

    def fetch(self, start, stop):
        assert 0 <= start < stop <= self.size
        self.fetches.append((start, stop))
        return self.blob[start:stop]

    def fetch_ranges(self, ranges):
        ranges = list(ranges)
        assert all(0 <= a < b <= self.size for a, b in ranges)
        self.range_calls.append(ranges)
        return [self.blob[a:b] for a, b in ranges]

    def table(self, expected=None, header=None):
        header = header or tiff_ifd_offset(self.blob[:16])
        return read_tile_table(
            self.fetch, self.fetch_ranges, self.size, header, path="mem://t", expected=expected
        )

    @property
    def requests(self):
        return len(self.fetches) + sum(len(r) for r in self.range_calls)


def tiles(offsets, counts, typ=LONG):
    return [(324, typ, offsets), (325, typ, counts)]


# -- header ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"II*\x00" + struct.pack("<L", 8), TiffHeader("<", False, 8)),
        (b"MM\x00*" + struct.pack(">L", 200), TiffHeader(">", False, 200)),
        (b"II+\x00" + struct.pack("<HHQ", 8, 0, 300), TiffHeader("<", True, 300)),
        (b"MM\x00+" + struct.pack(">HHQ", 8, 0, 2**40), TiffHeader(">", True, 2**40)),
        (b"\x00" * 128 + b"DICM", None),
        (b"DICM" + b"\x00" * 124, None),
        (b"II*\x00" + struct.pack("<L", 0), None),  # no IFD
        (b"II*\x00" + struct.pack("<L", 4), None),  # IFD inside the header
        (b"II+\x00" + struct.pack("<HHQ", 4, 0, 300), None),  # BigTIFF offset size 4
        (b"II+\x00" + struct.pack("<HH", 8, 0), None),  # cut off
        (b"II*", None),
        (b"IM*\x00" + struct.pack("<L", 8), None),
        (b"II\x00*" + struct.pack("<L", 8), None),  # magic in the wrong byte order
    ],
)
def test_header_recognition(prefix, expected):
    assert tiff_ifd_offset(prefix) == expected


# -- IFD parsing and request budget ------------------------------------------------------------
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("typ", [SHORT, LONG, LONG8])
def test_out_of_line_arrays_one_ifd_request_one_fetch_ranges(order, big, typ, monkeypatch):
    monkeypatch.setattr(tiff, "TRAILING", 0)  # an IFD far from the end of its object
    offsets, counts = list(range(1000, 1300, 3)), [1] * 100
    far = 2 * IFD_WINDOW  # out of the IFD window, adjacent: one merged range
    entries = [(256, LONG, [5]), *tiles(offsets, counts, typ), (0x8000, SHORT, [1])]
    store = Store(craft(far + 2000, entries, order=order, big=big, at={324: far, 325: far + 800}))
    table = store.table(expected=100)
    assert table.offsets.dtype == table.counts.dtype == np.uint64
    assert table.offsets.tolist() == offsets and table.counts.tolist() == counts
    assert store.fetches == [(16, 16 + IFD_WINDOW)]
    assert len(store.range_calls) == 1 and len(store.range_calls[0]) == 1
    assert table.requests == store.requests == 2


def test_far_apart_arrays_are_two_ranges_of_one_call(monkeypatch):
    monkeypatch.setattr(tiff, "TRAILING", 0)
    n = 50
    at = {324: 2 * IFD_WINDOW, 325: 2 * IFD_WINDOW + 4 * n + MAX_GAP + 1}
    store = Store(craft(at[325] + 4 * n, tiles(list(range(100, 150)), [1] * n), at=at))
    table = store.table()
    assert store.range_calls == [[(at[324], at[324] + 4 * n), (at[325], at[325] + 4 * n)]]
    assert table.requests == store.requests == 3 and table.offsets[-1] == 149


def test_an_ifd_near_the_end_is_fetched_with_its_arrays():
    # the trailing padding of a dual DICOM-TIFF file: IFD, then the arrays, then the end
    n = 3000
    at = {324: 2 * IFD_WINDOW, 325: 2 * IFD_WINDOW + 4 * n}
    offsets = list(range(100, 100 + n))
    store = Store(craft(at[325] + 4 * n, tiles(offsets, [1] * n), at=at))
    table = store.table()
    assert table.offsets.tolist() == offsets and table.counts.tolist() == [1] * n
    assert store.fetches == [(16, at[325] + 4 * n)] and store.range_calls == []
    assert table.requests == store.requests == 1


def test_arrays_inside_the_ifd_window_need_no_second_request():
    store = Store(craft(1000, tiles([500, 600, 700], [10, 20, 30], SHORT)))
    table = store.table()
    assert table.counts.tolist() == [10, 20, 30]
    assert store.range_calls == [] and table.requests == 1
    assert store.fetches == [(16, 1000)]  # the window stops at the end of the object


@pytest.mark.parametrize(
    ("big", "typ", "values"),
    [
        (False, LONG, [123456]),
        (False, SHORT, [7, 9]),
        (True, LONG, [123456, 7]),
        (True, SHORT, [1, 2, 3, 4]),
        (True, LONG8, [2**33]),
    ],
)
def test_inline_values(big, typ, values):
    store = Store(craft(300, tiles(values, values, typ), order=">", big=big))
    table = store.table()
    assert table.offsets.tolist() == values == table.counts.tolist()
    assert table.requests == 1 and store.range_calls == []


def test_strips_when_no_tiles_and_tiles_preferred():
    store = Store(craft(400, [(273, LONG, [200, 300]), (279, LONG, [50, 60])]))
    assert store.table().offsets.tolist() == [200, 300]
    both = [(273, LONG, [1, 2]), (279, LONG, [1, 1]), *tiles([5, 6], [7, 8])]
    assert Store(craft(400, both)).table().offsets.tolist() == [5, 6]


def test_ifd_longer_than_the_window_costs_one_more_fetch(monkeypatch):
    monkeypatch.setattr(tiff, "TRAILING", 0)
    dummies = [(0x9000 + k, SHORT, [k]) for k in range(400)]  # 400 * 12 bytes > 4 KiB
    blob = craft(3 * IFD_WINDOW, dummies + tiles([10, 20], [3, 4]))
    store = Store(blob)
    table = store.table()
    assert table.offsets.tolist() == [10, 20] and len(store.fetches) == 2
    assert store.fetches[1] == (16 + IFD_WINDOW, 16 + 2 + 402 * 12)


@pytest.mark.parametrize(
    "entries",
    [
        [(256, LONG, [1])],  # no tile or strip table
        [(324, LONG, [1, 2])],  # offsets without counts
        tiles([1, 2], [1, 2], SSHORT),  # unsupported type
        tiles([1, 2, 3], [1, 2]),  # different lengths
        tiles([], []),  # empty
    ],
)
def test_unusable_ifd_gives_none(entries):
    assert Store(craft(200, entries)).table() is None


def test_expected_count_bails_out_before_fetching_arrays():
    store = Store(craft(3 * IFD_WINDOW, tiles(list(range(99)), [1] * 99), at={324: 9000}))
    assert store.table(expected=100) is None
    assert store.range_calls == [] and len(store.fetches) == 1


# -- bounds -----------------------------------------------------------------------------------
def test_ifd_offset_beyond_size():
    store = Store(craft(200, tiles([1], [1]), ifd_at=150), size=151)
    assert store.table() is None and store.requests == 0


def _patch(blob, pos, fmt, value):
    return blob[:pos] + struct.pack(fmt, value) + blob[pos + struct.calcsize(fmt) :]


def test_entry_count_beyond_size():
    blob = _patch(craft(300, tiles([1], [1])), 16, "<H", 500)  # 500 entries do not fit
    store = Store(blob)
    assert store.table() is None and store.requests == 1


@pytest.mark.parametrize("big", [False, True])
def test_array_beyond_size_is_never_requested(big):
    blob = craft(20000, tiles(list(range(100)), [1] * 100), big=big, at={324: 19700})
    store = Store(blob, size=20000)
    assert store.table() is None  # 100 LONGs from 19700 end past 20000
    assert store.range_calls == []


def test_huge_counts_give_none_without_allocating():
    blob = craft(4000, tiles([1, 2], [3, 4], LONG8), big=True, at={324: 1000, 325: 2000})
    blob = _patch(blob, 16 + 8 + 4, "<Q", 2**62)  # TileOffsets count
    blob = _patch(blob, 16 + 8 + 20 + 4, "<Q", 2**62)  # TileByteCounts count
    huge_ifd = _patch(blob, 16, "<Q", 2**60)  # entry count
    tracemalloc.start()
    try:
        assert Store(blob).table() is None and Store(huge_ifd).table() is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_short_read_raises_truncated(monkeypatch):
    monkeypatch.setattr(tiff, "TRAILING", 0)  # the arrays in a read of their own
    blob = craft(3 * IFD_WINDOW, tiles([1, 2], [3, 4]), at={324: 9000, 325: 9008})
    store = Store(blob)
    store.fetch_ranges = lambda ranges: [blob[a : b - 1] for a, b in ranges]
    with pytest.raises(TruncatedDicomError, match="mem://t"):
        store.table()


# -- verification against the item layout ------------------------------------------------------
def _layout(counts, header_end=100):
    """Offsets of back-to-back items holding tiles of ``counts`` (odd ones padded)."""
    offsets, pos = [], header_end
    for c in counts:
        offsets.append(pos + 8)
        pos += 8 + c + c % 2
    return offsets, pos


def test_frames_of_a_valid_layout():
    counts = [10, 7, 12, 1]
    offsets, end = _layout(counts)
    first = b"\xfe\xff\x00\xe0" + (10).to_bytes(4, "little")
    got = tile_table_frames(
        TileTable(offsets, counts, 2), header_end=100, size=end + 8, first_item=first
    )
    assert got is not None and all(a.dtype == np.int64 for a in got)
    assert got[0].tolist() == [100, 118, 134, 154] and got[1].tolist() == [118, 134, 154, 164]


def test_a_million_tiles_is_vectorised():
    counts = np.full(1_000_000, 6, dtype=np.uint64)
    offsets = 108 + 14 * np.arange(1_000_000, dtype=np.uint64)
    got = tile_table_frames(TileTable(offsets, counts, 2), header_end=100, size=14_000_200)
    assert got is not None and int(got[1][-1]) == 14_000_100


@pytest.mark.parametrize(
    ("offsets", "counts", "header_end", "size"),
    [
        ([108, 140, 126], [10, 10, 10], 100, 1000),  # not increasing
        ([108, 120], [10, 10], 100, 1000),  # overlapping
        ([108, 134], [10, 10], 100, 1000),  # another (8-byte) item between them
        ([108, 127], [10, 10], 100, 1000),  # one stray byte more than the padding
        ([108, 125], [9, 10], 100, 1000),  # odd tile without its padding byte
        ([108, 116], [0, 10], 100, 1000),  # empty tile
        ([108, 126], [10, 10], 104, 1000),  # first item inside the Basic Offset Table
        ([108, 126], [10, 10], 100, 135),  # last tile past the end
        ([108, 2**63 + 8], [10, 10], 100, 1000),  # beyond int64
        ([], [], 100, 1000),
    ],
)
def test_inconsistent_tables_are_rejected(offsets, counts, header_end, size):
    table = TileTable(offsets, counts, 2)
    assert tile_table_frames(table, header_end=header_end, size=size) is None


@pytest.mark.parametrize(
    "first",
    [
        b"\xfe\xff\x00\xe0" + (12).to_bytes(4, "little"),  # length of another item
        b"\xfe\xff\xdd\xe0" + (10).to_bytes(4, "little"),  # sequence delimiter
        b"\xfe\xff\x00\xe0",  # cut off
    ],
)
def test_first_item_mismatch_is_rejected(first):
    table = TileTable([108, 126], [10, 10], 2)
    assert tile_table_frames(table, header_end=100, size=1000) is not None
    assert tile_table_frames(table, header_end=100, size=1000, first_item=first) is None


# -- the builder's dual-personality files --------------------------------------------------------
@pytest.fixture(scope="module")
def slides():
    encoded = jpeg_tiles(3, 32, 3)
    kw = {"tile": 32, "tiles": encoded, "offset_table": "empty"}
    return build_slide(70, 100, dual_tiff=True, **kw), build_slide(70, 100, **kw)


def _frames_by_scan(blob):
    """The index a scan of the items gives, and the one build_index gives (the TIFF table)."""
    store = Store(blob)
    parsed = parse_header(store.fetch, len(blob))
    scan = scan_items(store.fetch_ranges, parsed)
    starts, stops = group_fragments(scan, number_of_frames(parsed), parsed)
    index, _ = build_index(parsed, store.fetch_ranges)
    assert index.offset_table == "tiff"
    assert np.array_equal(index.starts, starts) and np.array_equal(index.stops, stops)
    return parsed, scanned_index(parsed, starts, stops)


def test_dual_file_is_dicom_and_tiff(slides):
    dual, plain = slides
    ds, ref = pydicom.dcmread(io.BytesIO(dual)), pydicom.dcmread(io.BytesIO(plain))
    assert dual[:4] == b"II*\x00" and dual[8:128] == b"\x00" * 120 and dual[128:132] == b"DICM"
    assert ds.preamble[:4] == b"II*\x00" and "DataSetTrailingPadding" in ds
    header = tiff_ifd_offset(dual[:132])
    pad = dual.rindex(b"\xfc\xff\xfc\xffOB\x00\x00")
    assert header is not None and header.ifd_offset == pad + 12  # the padding value
    assert ds.NumberOfFrames == ref.NumberOfFrames == 12
    assert np.array_equal(ds.pixel_array, ref.pixel_array)


def test_dual_file_frames_equal_the_scan(slides):
    dual = slides[0]
    parsed, index = _frames_by_scan(dual)
    store = Store(dual)
    table = store.table(expected=index.number_of_frames)
    assert table is not None and table.requests == 1  # IFD and arrays in the window
    first = dual[int(table.offsets[0]) - 8 : int(table.offsets[0])]
    got = tile_table_frames(table, header_end=parsed.header_end, size=len(dual), first_item=first)
    assert got is not None
    assert np.array_equal(got[0], index.starts) and np.array_equal(got[1], index.stops)
    assert dual[int(got[1][-1]) : int(got[1][-1]) + 4] == b"\xfe\xff\xdd\xe0"


@pytest.mark.parametrize("trailing", [True, False])
def test_dual_file_with_many_frames_costs_one_or_two_requests(trailing, monkeypatch):
    if not trailing:  # an IFD far from the end: its window, then the arrays
        monkeypatch.setattr(tiff, "TRAILING", 0)
    frames = fake_jpeg_frames(600, min_size=8, max_size=24)
    dual = build_encapsulated(frames, offset_table="empty", dual_tiff=True)
    parsed, index = _frames_by_scan(dual)
    store = Store(dual)
    table = store.table(expected=600)
    # the IFD and its arrays are the file's trailing padding: one read to the end
    assert table is not None and table.requests == store.requests == (1 if trailing else 2)
    assert len(store.fetches) == 1 and len(store.range_calls) == (0 if trailing else 1)
    got = tile_table_frames(table, header_end=parsed.header_end, size=len(dual))
    assert got is not None
    assert np.array_equal(got[0], index.starts) and np.array_equal(got[1], index.stops)
    decoded = pydicom.dcmread(io.BytesIO(dual))
    stored = pydicom.encaps.generate_frames(decoded.PixelData, number_of_frames=600)
    assert list(stored) == frames


def test_dual_file_seen_by_tifffile(slides):
    tifffile = pytest.importorskip("tifffile")
    dual = slides[0]
    table = Store(dual).table()
    with tifffile.TiffFile(io.BytesIO(dual)) as tif:
        page = tif.pages[0]
        assert list(page.dataoffsets) == table.offsets.tolist()
        assert list(page.databytecounts) == table.counts.tolist()
        assert page.shape[:2] == (70, 100)


@pytest.mark.parametrize(
    "options",
    [
        {"offset_table": "bot"},
        {"offset_table": "eot"},
        {"offset_table": "empty", "fragments_per_frame": 2},
        {"offset_table": "empty", "trailing": b"\x00\x00"},
    ],
)
def test_dual_tiff_needs_empty_bot_one_fragment_no_trailing(options):
    with pytest.raises(ValueError, match="dual_tiff"):
        build_encapsulated(fake_jpeg_frames(2), dual_tiff=True, **options)


def test_corrupt_tile_table_falls_back_to_the_scan():
    frames = fake_jpeg_frames(40, seed=4, min_size=30, max_size=60)
    dual = bytearray(build_encapsulated(frames, offset_table="empty", dual_tiff=True))
    table = Store(bytes(dual)).table()
    assert table is not None
    packed = struct.pack("<2L", *table.offsets[:2].tolist())
    at = bytes(dual).index(packed, 132)  # the TileOffsets array in the trailing padding
    dual[at : at + 8] = struct.pack("<2L", *table.offsets[1::-1].tolist())  # swapped
    store = Store(bytes(dual))
    parsed = parse_header(store.fetch, len(dual))
    index, scan = build_index(parsed, store.fetch_ranges)
    assert index.offset_table == "scan" and scan is not None
    decoded = pydicom.dcmread(io.BytesIO(bytes(dual)))
    assert list(pydicom.encaps.generate_frames(decoded.PixelData, number_of_frames=40)) == frames
    assert [
        bytes(dual[a + 8 : b]) for a, b in zip(index.starts, index.stops, strict=True)
    ] == frames


def test_a_tile_table_that_regroups_the_items_is_an_error_not_frames():
    """Items A0 | B0 B1 | C0 (B1 a continuation), Number of Frames 3; the tile table says
    A0, B0, B1+C0: back to back, the first tile right, the last ending at the delimiter.
    Reading tile 1 now checks the next tile's item (B1 is not B1+C0) and tile 2 that it is
    one item; before, both came back wrong without an error."""
    import struct

    from conftest import with_short_value

    from hdfsspec import OffsetTableError
    from hdfsspec.cache.dicom_cache import DicomFrameCache

    a0, b0, b1, c0 = fake_jpeg_frames(4, seed=7)
    b1, b0 = b"\x00\x11" + b1[2:], b0[:-2] + b"\x00\x00"
    blob = build_encapsulated([a0, b0, b1, c0], offset_table="empty", dual_tiff=True)
    blob = with_short_value(blob, 0x00280008, b"IS", b"3 ")  # Number of Frames 3
    (ifd,) = struct.unpack_from("<L", blob, 4)
    (count,) = struct.unpack_from("<H", blob, ifd)
    entries = {}
    for k in range(count):
        tag, _, _, value = struct.unpack_from("<HHLL", blob, ifd + 2 + 12 * k)
        entries[tag] = (ifd + 2 + 12 * k, value)
    out = bytearray(blob)
    offsets = struct.unpack_from("<4L", blob, entries[324][1])
    counts = struct.unpack_from("<4L", blob, entries[325][1])
    for tag in (324, 325):
        struct.pack_into("<L", out, entries[tag][0] + 4, 3)
    struct.pack_into("<3L", out, entries[325][1], counts[0], counts[1], counts[2] + 8 + counts[3])
    assert offsets[0] < offsets[1] < offsets[2]
    blob = bytes(out)
    cache = DicomFrameCache(0, lambda a, b: blob[a:b], len(blob), path="mem://t.dcm")
    assert cache.index.offset_table == "tiff"  # the table passes the checks made at open
    assert cache.read_frames([0]) == [a0]
    for frame in (1, 2):
        with pytest.raises(OffsetTableError, match="one fragment"):
            cache.read_frames([frame])

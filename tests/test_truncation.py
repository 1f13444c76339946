"""Objects cut short or damaged at their item structure: the frames that can be vouched for
are read (equal to pydicom's), the others are refused with a typed error; never short,
mis-grouped or delimiter-polluted bytes. Also: a differential fuzzer against pydicom."""

from __future__ import annotations

import struct

import pytest
from oracle import reference_frames

from hdfsspec import (
    DicomFrameCache,
    FrameIndexError,
    OffsetTableError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)
from hdfsspec.testing import build_encapsulated, build_native, fake_jpeg_frames
from hdfsspec.testing.fuzz import fuzz, judge

FRAMES = fake_jpeg_frames(5, seed=9, min_size=200, max_size=300)
ITEM = b"\xfe\xff\x00\xe0"
DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
LAYOUTS = [("bot", 1), ("bot", 2), ("empty", 1), ("empty", 2), ("eot", 1), ("eot-no-lengths", 1)]


def open_cache(blob: bytes) -> tuple[DicomFrameCache, list[tuple[int, int]]]:
    log: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> bytes:
        assert 0 <= a <= b <= len(blob)
        log.append((a, b))
        return blob[a:b]

    cache = DicomFrameCache(
        0,
        fetch,
        len(blob),
        path="mem://cut.dcm",
        fetch_ranges=lambda r: [fetch(a, b) for a, b in r],
    )
    return cache, log


def read_each(cache: DicomFrameCache, n: int) -> list[bytes | Exception]:
    out: list[bytes | Exception] = []
    for k in range(n):
        try:
            out.append(cache.read_frames([k])[0])
        except (TruncatedDicomError, OffsetTableError) as exc:
            out.append(exc)
    return out


def damaged(table: str, per: int, how: str) -> bytes:
    blob = build_encapsulated(FRAMES, offset_table=table, fragments_per_frame=per)
    assert blob.endswith(DELIMITER)
    last = blob.rfind(ITEM)
    if how == "cut_before_last_item":  # an upload cut at an item boundary
        return blob[:last]
    if how == "no_delimiter":  # cut after the last item
        return blob[: -len(DELIMITER)]
    body = bytearray(blob)  # the last item's length runs over the delimiter
    (length,) = struct.unpack_from("<L", body, last + 4)
    struct.pack_into("<L", body, last + 4, length + len(DELIMITER))
    return bytes(body)


@pytest.mark.parametrize("how", ["cut_before_last_item", "no_delimiter", "swallowed_delimiter"])
@pytest.mark.parametrize(("table", "per"), LAYOUTS, ids=lambda v: str(v))
def test_the_last_frame_is_refused_the_others_read(table, per, how):
    blob = damaged(table, per, how)
    whole = reference_frames(
        build_encapsulated(FRAMES, offset_table=table, fragments_per_frame=per)
    )
    cache, log = open_cache(blob)
    try:
        n = cache.index.number_of_frames
    except (TruncatedDicomError, OffsetTableError, FrameIndexError) as exc:
        # a frame's items are gone: the table (or Number of Frames) points past the end
        assert (how, per) == ("cut_before_last_item", 1), exc
        assert exc.path == "mem://cut.dcm" and exc.offset is not None
        return
    assert n == len(FRAMES)
    got = read_each(cache, n)
    assert got[:-1] == whole[:-1]  # the frames the next item vouches for: pydicom's bytes
    last = got[-1]
    assert isinstance(last, (TruncatedDicomError, OffsetTableError)), last
    assert last.path == "mem://cut.dcm" and last.offset is not None and last.tag == 0x7FE00010
    if how != "swallowed_delimiter":
        assert isinstance(last, TruncatedDicomError) and last.offset == len(blob)
    # the header, then a frame a call (the walks for the last frame's end: two at most)
    assert len(log) <= 1 + n + 2 + (table == "empty") * 2
    assert sum(b - a for a, b in log) <= 3 * len(blob)


def test_issue_example_reads_no_short_last_frame():
    """The example of the report: two fragments a frame, cut before the last item's header."""
    blob = damaged("bot", 2, "cut_before_last_item")
    cache, log = open_cache(blob)
    with pytest.raises(TruncatedDicomError, match="Sequence Delimitation Item") as refused:
        cache.read_frames([4])
    assert refused.value.offset == len(blob)
    assert (
        cache.read_frames([0, 1, 2, 3])
        == reference_frames(build_encapsulated(FRAMES, offset_table="bot", fragments_per_frame=2))[
            :4
        ]
    )
    assert len(log) <= 4


def test_a_frame_not_followed_by_an_item_is_refused():
    """What follows a frame vouches for its end: frame 1's item tag damaged (bytes lost or
    overwritten there) refuses frame 0 and frame 1; the others read."""
    blob = build_encapsulated(FRAMES, offset_table="eot")
    first = blob.find(ITEM, blob.find(b"\xe0\x7f\x10\x00")) + 8  # after the empty BOT
    second = blob.find(ITEM, first + 8)
    damaged = blob[:second] + b"\x00\x00" + blob[second + 2 :]
    cache, log = open_cache(damaged)
    with pytest.raises(OffsetTableError, match="neither the next item nor the sequence") as bad:
        cache.read_frames([0])
    assert bad.value.offset == second
    with pytest.raises(OffsetTableError, match="no fragment item where the offset table"):
        cache.read_frames([1])
    assert cache.read_frames([2, 3, 4]) == reference_frames(blob)[2:]
    assert len(log) == 1  # the first request holds the whole small object


def test_frames_of_a_data_set_without_pixel_data_are_a_typed_error():
    blob = build_native(__import__("numpy").zeros((3, 4, 4), dtype="uint8"))
    at = blob.find(b"\xe0\x7f\x10\x00")
    cache, log = open_cache(blob[:at])  # Number of Frames 3, the pixels cut off
    with pytest.raises(FrameIndexError, match="no Pixel Data element") as refused:
        cache.read_frames([1])
    assert refused.value.offset == at and refused.value.tag == 0x7FE00010
    with pytest.raises(IndexError):
        cache.read_frames([3])  # beyond Number of Frames: an index out of range
    assert len(log) == 1


def test_an_unknown_transfer_syntax_is_refused_for_frames():
    good = build_native(__import__("numpy").zeros((2, 4, 4), dtype="uint8"))
    uid = b"1.2.840.10008.1.2.1\x00"
    assert uid in good
    blob = good.replace(uid, b"1.2.840.113619.5.2\x00\x00")  # GE's private big-endian pixels
    cache, log = open_cache(blob)
    with pytest.raises(
        UnsupportedTransferSyntaxError, match=r"1\.2\.840\.113619\.5\.2"
    ) as refused:
        cache.read_frames([0])
    assert refused.value.tag == 0x00020010 and refused.value.offset == good.find(
        b"\x02\x00\x10\x00UI"
    )
    assert len(log) == 1
    assert cache._fetch(0, 132)[128:] == b"DICM"  # bytes still read as bytes


def test_a_basic_offset_table_of_many_entries_for_one_frame_is_refused():
    blob = build_encapsulated(FRAMES, offset_table="bot")
    at = blob.find(b"\x28\x00\x08\x00IS")
    (length,) = struct.unpack_from("<H", blob, at + 6)
    one = blob[: at + 8] + b"1".ljust(length) + blob[at + 8 + length :]
    cache, log = open_cache(one)
    with pytest.raises(FrameIndexError, match="5 entries but Number of Frames is 1"):
        cache.read_frames([0])
    assert len(log) == 1


def test_fuzz_judge_sees_wrong_bytes():
    """The judge itself: bytes where pydicom reads other bytes are 'wrong'."""
    blob = build_encapsulated(FRAMES, offset_table="eot")
    assert judge(blob, blob) == ("same", "")
    polluted = damaged("eot", 1, "swallowed_delimiter")
    assert judge(polluted, blob)[0] == "same"  # refused, not served


def test_differential_fuzz_short():
    """A short run of the fuzzer: no wrong bytes, no untyped error, no runaway, no hang."""
    report = fuzz(mutants=1500, seed=3)
    assert report.mutants == 1500
    assert report.bad == 0, report.table()
    assert report.outcomes["same"] > 1000  # most mutants read (or refused) as pydicom does


@pytest.mark.slow
def test_differential_fuzz_long():
    report = fuzz(mutants=20_000, seed=4)
    assert report.bad == 0, report.table()


def test_one_frame_whose_fragments_hold_several_codestreams_is_refused():
    """Number of Frames 1 (or lost) over fragments of six JPEG streams: joining them all
    (the single-frame rule) would serve six frames as one."""
    blob = build_encapsulated(FRAMES, offset_table="empty")
    at = blob.find(b"\x28\x00\x08\x00IS")
    (length,) = struct.unpack_from("<H", blob, at + 6)
    one = blob[: at + 8] + b"1".ljust(length) + blob[at + 8 + length :]
    cache, log = open_cache(one)
    with pytest.raises(FrameIndexError, match="begins a new codestream") as refused:
        cache.read_frames([0])
    bot = one.find(ITEM, one.find(b"\xe0\x7f\x10\x00"))  # the empty Basic Offset Table
    second = one.find(ITEM, one.find(ITEM, bot + 8) + 8)  # fragment 1: a new stream
    assert refused.value.offset == second
    assert len(log) == 1  # the small object is held by the first request
    single = build_encapsulated(FRAMES[:1], offset_table="empty", fragments_per_frame=3)
    cache, _ = open_cache(single)  # one stream in three fragments: one frame
    assert cache.read_frames([0]) == [FRAMES[0]]

"""Header and frame-index parsing through a fetch callable: layouts, request counts, errors."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from conftest import with_short_value
from oracle import reference_frames

from hdfsspec import (
    FrameIndex,
    FrameIndexError,
    NotDicomError,
    OffsetTableError,
    ReadOptions,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)
from hdfsspec.cache.dicom_cache import DicomFrameCache
from hdfsspec.cache.whole_index import build_index
from hdfsspec.dicom.parse import parse_header
from hdfsspec.testing import build_encapsulated, build_native, build_sr, fake_jpeg_frames

KIB = 1024


def index_of(blob: bytes, make, **options):
    fetch, fetch_ranges, log = make(blob)
    opts = ReadOptions().updated(**options)
    parsed = parse_header(fetch, len(blob), path="mem://x.dcm", options=opts)
    index, _ = build_index(parsed, fetch_ranges, opts)
    return parsed, index, log


EXPECTED_KIND = {
    "bot.dcm": "bot",
    "eot.dcm": "eot",
    "eot_nolen.dcm": "eot",
    "dual_tiff.dcm": "tiff",
    "empty_bot.dcm": "scan",
    "fragmented_bot.dcm": "bot",
    "fragmented_empty.dcm": "scan",
    "single_frame.dcm": "scan",
    "trailing.dcm": "bot",
}


@pytest.mark.parametrize("name", sorted(__import__("conftest").CORPUS))
def test_every_layout_frames_equal_pydicom(name, corpus, counting_fetch):
    blob = corpus[name]
    fetch, fetch_ranges, log = counting_fetch(blob)
    cache = DicomFrameCache(0, fetch, len(blob), fetch_ranges=fetch_ranges, path=name)
    index = cache.index
    assert index.offset_table == EXPECTED_KIND.get(name, "native")
    frames = cache.read_frames(list(range(index.number_of_frames)))
    assert frames == reference_frames(blob)
    # every byte fetched at most once: the first request, then each frame block
    assert cache.stats.bytes <= len(blob) + 8 * index.number_of_frames
    assert sum(b - a for a, b in log) == cache.stats.bytes


def test_bot_header_fits_first_request_one_request(corpus, counting_fetch):
    parsed, index, log = index_of(corpus["bot.dcm"], counting_fetch, first_request=4 * KIB)
    assert log == [(0, 4 * KIB)]
    assert parsed.header_end == index.header_end == int(index.starts[0])
    assert index.stops[-1] == -1  # the last frame's end is found when it is read


def test_header_larger_than_first_guess_grows_in_few_requests(counting_fetch):
    frames = fake_jpeg_frames(3000, min_size=64, max_size=96)
    blob = build_encapsulated(frames, offset_table="eot")  # 48 KB of EOT in the header
    _, index, log = index_of(blob, counting_fetch, first_request=8 * KIB)
    assert index.offset_table == "eot" and index.number_of_frames == 3000
    assert len(log) == 2, log  # first guess, then the rest of the EOT value at once
    assert log[0] == (0, 8 * KIB) and log[1][0] == 8 * KIB
    # ... and nothing past the Pixel Data and BOT item headers: no frame is fetched yet
    assert index.header_end <= log[1][1] <= index.header_end + 52
    assert log[1][1] < int(index.stops[0])


def test_empty_bot_scan_uses_large_windows(counting_fetch):
    frames = fake_jpeg_frames(1000, min_size=900, max_size=1100)
    blob = build_encapsulated(frames, offset_table="empty")
    _, index, log = index_of(
        blob, counting_fetch, first_request=64 * KIB, scan_window=256 * KIB, scan_concurrency=2
    )
    assert index.offset_table == "scan" and index.number_of_frames == 1000
    assert len(log) <= 10, log
    assert sum(b - a for a, b in log) <= len(blob)
    assert np.array_equal(np.diff(index.starts) > 0, np.ones(999, bool))


def test_fragmented_frames_without_table_split_on_start_markers(corpus, counting_fetch):
    _, index, _ = index_of(corpus["fragmented_empty.dcm"], counting_fetch)
    assert index.number_of_frames == 12


def test_ambiguous_fragments_raise(counting_fetch):
    frames = [b"\x00\x01" * 40] * 3  # no start markers
    blob = build_encapsulated(frames, offset_table="empty", fragments_per_frame=2)
    with pytest.raises(FrameIndexError, match="cannot split 6 fragments into 3 frames") as err:
        index_of(blob, counting_fetch)
    assert err.value.path == "mem://x.dcm" and err.value.tag == 0x7FE00010
    assert err.value.offset is not None and err.value.offset > 0


def test_native_one_bit_frames_not_byte_aligned(corpus, counting_fetch):
    _, index, _ = index_of(corpus["native_bits.dcm"], counting_fetch)
    assert index.bits_per_frame == 15
    assert [index.bit_offset(i) for i in range(4)] == [0, 7, 6, 5]
    assert index.frame_range(1)[0] == index.header_end + 1


def test_object_without_pixel_data_is_one_block(counting_fetch):
    blob = build_sr("x" * 100)
    parsed, index, log = index_of(blob, counting_fetch)
    assert index.offset_table == "none" and index.number_of_frames == 0
    assert log == [(0, len(blob))]
    assert parsed.dataset.ContentSequence[0].TextValue == "x" * 100


def test_index_roundtrip_and_pickle(corpus, counting_fetch):
    _, index, _ = index_of(corpus["eot.dcm"], counting_fetch)
    assert FrameIndex.from_dict(index.to_dict()) == index
    assert pickle.loads(pickle.dumps(index)) == index
    with pytest.raises(ValueError):
        index.starts[0] = 5  # immutable


def test_index_validation_rejects_damaged_dict(corpus, counting_fetch):
    _, index, _ = index_of(corpus["eot.dcm"], counting_fetch)
    data = index.to_dict()
    data["stops"][3] = index.size + 10
    with pytest.raises(ValueError, match="outside"):
        FrameIndex.from_dict(data)


# -- bad input -----------------------------------------------------------------------------
def test_not_dicom(counting_fetch):
    with pytest.raises(NotDicomError, match="no 'DICM' prefix") as err:
        index_of(b"PK\x03\x04" + b"\x00" * 300, counting_fetch)
    assert err.value.offset == 128 and "mem://x.dcm" in str(err.value)


@pytest.mark.parametrize("cut", [100, 140, 600, -30])
def test_truncated_file_raises_typed_error(corpus, counting_fetch, cut):
    blob = corpus["bot.dcm"]
    blob = blob[:cut] if cut > 0 else blob[: len(blob) + cut]
    with pytest.raises((TruncatedDicomError, NotDicomError, OffsetTableError)) as err:
        _, index, _ = index_of(blob, counting_fetch)
        fetch, fetch_ranges, _ = counting_fetch(blob)
        DicomFrameCache(
            0, fetch, len(blob), fetch_ranges=fetch_ranges, path="mem://x.dcm"
        ).read_frames([index.number_of_frames - 1])
    assert err.value.path == "mem://x.dcm" and err.value.offset is not None


def _nested(blob: bytes, levels: int, defined: bool) -> bytes:
    """``blob`` with a sequence nesting ``levels`` items deep just before its Pixel Data."""
    undefined = 0xFFFFFFFF
    content = b""
    for i in range(levels):
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(content) if defined else undefined)
        item += content + (b"" if defined else struct.pack("<HHL", 0xFFFE, 0xE00D, 0))
        tag = (0x5200, 0x9230) if i == levels - 1 else (0x0040, 0xA730)
        head = struct.pack("<HH", *tag) + b"SQ\x00\x00"
        length = len(item) if defined else undefined
        seq_end = b"" if defined else struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        content = head + struct.pack("<L", length) + item + seq_end
    pos = blob.index(b"\xe0\x7f\x10\x00")
    return blob[:pos] + content + blob[pos:]


@pytest.mark.parametrize("levels", [2, 3000])
def test_deeply_nested_sequences_are_walked_without_recursion(corpus, counting_fetch, levels):
    """The walker keeps its own stack: the depth is bounded by the object, not by Python.

    pydicom reads undefined-length sequences by recursion: past its depth the header
    cannot be read, and that is a typed error naming the sequence, never RecursionError.
    """
    blob = corpus["native_u16.dcm"]
    pixel_offset = blob.index(b"\xe0\x7f\x10\x00")
    for defined in (True, False):
        nested = _nested(blob, levels, defined)
        fetch, _, log = counting_fetch(nested)
        if levels == 2 or defined:  # pydicom defers defined-length sequences
            parsed = parse_header(fetch, len(nested), path="mem://x.dcm")
            assert parsed.header.pixel_data_offset == len(nested) - len(blob) + pixel_offset
            assert parsed.header.nesting[0] == (4 if not defined else 0)
            assert len(parsed.dataset.PerFrameFunctionalGroupsSequence) == 1
            continue
        with pytest.raises(NotDicomError, match="nest 6000 deep") as err:
            parse_header(fetch, len(nested), path="mem://x.dcm")
        assert (err.value.offset, err.value.tag) == (pixel_offset, 0x52009230)
        assert err.value.path == "mem://x.dcm"
        assert sum(b - a for a, b in log) <= 2 * len(nested)


def _implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def _implicit_items(undefined_item: bool) -> bytes:
    """One item of implicit-VR elements (one a nested undefined-length sequence)."""
    nested = _implicit(0x00080100, b"CODE01") + _implicit(0x00080102, b"DCM ")
    nested_seq = struct.pack("<HHL", 0x0040, 0xA043, 0xFFFFFFFF)
    nested_seq += struct.pack("<HHL", 0xFFFE, 0xE000, len(nested)) + nested
    nested_seq += struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    content = _implicit(0x00091011, b"abcd") + nested_seq
    if undefined_item:
        item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + content
        item += struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    else:
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
    return item + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _insert_before(blob: bytes, marker: bytes, element: bytes) -> bytes:
    pos = blob.index(marker)
    return blob[:pos] + element + blob[pos:]


@pytest.mark.parametrize("undefined_item", [True, False])
def test_un_of_undefined_length_is_an_implicit_sequence(corpus, counting_fetch, undefined_item):
    """PS3.5 6.2.2: a UN element of undefined length holds an implicit-VR sequence.

    Private sequences often arrive so (written by software that did not know the
    tag); the walker must read its items in implicit VR, as pydicom does.
    """
    blob = corpus["native_u16.dcm"]
    creator = struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", 4) + b"ACME"
    un = struct.pack("<HH", 0x0009, 0x1010) + b"UN\x00\x00" + struct.pack("<L", 0xFFFFFFFF)
    element = creator + un + _implicit_items(undefined_item)
    # after group 0008, before group 0010: Patient's Name is the first (0010,xxxx) element
    changed = _insert_before(blob, b"\x10\x00\x10\x00PN", element)
    parsed, index, log = index_of(changed, counting_fetch)
    assert parsed.dataset[0x00091010].VR == "SQ" and len(log) == 1
    fetch, fetch_ranges, _ = counting_fetch(changed)
    cache = DicomFrameCache(0, fetch, len(changed), fetch_ranges=fetch_ranges, path="mem://x")
    assert cache.read_frames(range(index.number_of_frames)) == reference_frames(changed)


def test_explicit_sequence_item_encoded_implicit(corpus, counting_fetch):
    """An item of an explicit-VR sequence written in implicit VR is read as pydicom reads it."""
    blob = corpus["native_u16.dcm"]
    seq = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\x00\x00" + struct.pack("<L", 0xFFFFFFFF)
    changed = _insert_before(blob, b"\x10\x00\x10\x00PN", seq + _implicit_items(True))
    parsed, _, log = index_of(changed, counting_fetch)
    assert len(parsed.dataset.ReferencedImageSequence) == 1 and len(log) == 1
    assert parsed.header.pixel_data_offset == changed.index(b"\xe0\x7f\x10\x00")


def test_one_element_without_vr_in_an_explicit_data_set(corpus, counting_fetch):
    """pydicom reads an element whose VR bytes are no VR as implicit, and goes on explicit."""
    blob = corpus["native_u16.dcm"]
    changed = _insert_before(blob, b"\x10\x00\x10\x00PN", _implicit(0x00091010, b"ACME"))
    parsed, index, log = index_of(changed, counting_fetch)
    assert parsed.dataset[0x00091010].value == b"ACME" and len(log) == 1
    assert parsed.header.pixel_data_offset == changed.index(b"\xe0\x7f\x10\x00")
    fetch, fetch_ranges, _ = counting_fetch(changed)
    cache = DicomFrameCache(0, fetch, len(changed), fetch_ranges=fetch_ranges, path="mem://x")
    assert cache.read_frames(range(index.number_of_frames)) == reference_frames(changed)


@pytest.mark.parametrize("declared", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def test_data_set_in_the_other_vr_encoding_than_declared(counting_fetch, declared):
    """A data set written in the other VR encoding than its transfer syntax says.

    pydicom reads it (with a warning) by looking at the first element; so must we.
    """
    arr = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    actual = "1.2.840.10008.1.2" if declared.endswith(".1") else "1.2.840.10008.1.2.1"
    blob = build_native(arr, transfer_syntax=actual)
    old, new = actual.encode(), declared.encode()
    old += b"\x00" * (len(old) % 2)
    new += b"\x00" * (len(new) % 2)
    meta_end = blob.index(old) + len(old)
    group_length = struct.unpack("<L", blob[140:144])[0] + len(new) - len(old)
    changed = blob[:140] + struct.pack("<L", group_length) + blob[144 : meta_end - len(old)]
    changed = changed[:-2] + struct.pack("<H", len(new)) + new + blob[meta_end:]
    with pytest.warns(UserWarning, match="Expected .* VR, but found"):
        parsed, _, _ = index_of(changed, counting_fetch)
        assert parsed.header.is_implicit_vr == (actual == "1.2.840.10008.1.2")
        fetch, fetch_ranges, _ = counting_fetch(changed)
        cache = DicomFrameCache(0, fetch, len(changed), fetch_ranges=fetch_ranges, path="m")
        assert cache.read_frames([0, 1]) == [arr[0].tobytes(), arr[1].tobytes()]


def test_length_field_beyond_object_never_fetched(corpus, counting_fetch):
    blob = bytearray(corpus["native_u16.dcm"])
    pos = blob.index(b"\x08\x00\x20\x00DA")  # Study Date, a short element near the start
    blob[pos + 6 : pos + 8] = struct.pack("<H", 0xFFF0)
    blob = bytes(blob)
    with pytest.raises(TruncatedDicomError) as err:
        index_of(blob[: pos + 200], counting_fetch)
    assert err.value.tag == 0x00080020 and err.value.offset == pos


def test_value_pydicom_cannot_convert_is_a_typed_error(corpus, counting_fetch):
    """A VR pydicom does not know fails when the value is used: a typed error, with its tag."""
    blob = bytearray(corpus["native_u16.dcm"])
    pos = blob.index(b"\x28\x00\x10\x00US")  # Rows
    blob[pos + 4 : pos + 6] = b"U\x00"  # sorts between AA and ZZ: an unknown VR to pydicom
    with pytest.raises(NotDicomError, match="cannot read Rows") as err:
        index_of(bytes(blob), counting_fetch)
    assert (err.value.tag, err.value.offset) == (0x00280010, pos + 8)


def test_corrupt_bot_not_increasing(counting_fetch):
    frames = fake_jpeg_frames(4)
    blob = bytearray(build_encapsulated(frames, offset_table="bot"))
    pos = blob.index(b"\xfe\xff\x00\xe0\x10\x00\x00\x00")  # BOT item of 4 entries
    blob[pos + 12 : pos + 16] = struct.pack("<L", 0)
    with pytest.raises(OffsetTableError, match="not increasing") as err:
        index_of(bytes(blob), counting_fetch)
    assert err.value.tag == 0x7FE00010


def test_bot_pointing_inside_a_fragment_detected_on_read(counting_fetch):
    frames = fake_jpeg_frames(4)
    blob = bytearray(build_encapsulated(frames, offset_table="bot"))
    pos = blob.index(b"\xfe\xff\x00\xe0\x10\x00\x00\x00")
    (second,) = struct.unpack("<L", blob[pos + 12 : pos + 16])
    blob[pos + 12 : pos + 16] = struct.pack("<L", second - 6)
    fetch, fetch_ranges, _ = counting_fetch(bytes(blob))
    cache = DicomFrameCache(0, fetch, len(blob), fetch_ranges=fetch_ranges, path="p")
    with pytest.raises(OffsetTableError, match="frame 1") as err:
        cache.read_frames([1])
    assert err.value.offset == cache.index.frame_range(1)[0]


def test_deflated_is_unsupported(counting_fetch):
    blob = build_native(np.zeros((1, 2, 2), np.uint8), transfer_syntax="1.2.840.10008.1.2.1.99")
    with pytest.raises(UnsupportedTransferSyntaxError, match="deflated") as err:
        index_of(blob, counting_fetch)
    assert err.value.tag == 0x00020010


@pytest.mark.parametrize("table", ["bot", "eot", "empty"])
def test_deflated_image_frame_compression_is_encapsulated(counting_fetch, table):
    """1.2.840.10008.1.2.8.1 (Sup 244) deflates each frame into its fragment: frames are
    located as in any encapsulated syntax (only a data set deflated as a whole is not)."""
    frames = [bytes([i]) * (900 + 8 * i) for i in range(12)]
    blob = build_encapsulated(frames, offset_table=table)
    # pydicom 3.0 cannot write this syntax yet: the same file with its UID (same length)
    blob = blob.replace(b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.8.1\x00")
    parsed, index, log = index_of(blob, counting_fetch, first_request=1024, scan_window=4096)
    assert parsed.header.transfer_syntax_uid == "1.2.840.10008.1.2.8.1"
    assert index.encapsulated and index.number_of_frames == 12
    assert len(log) <= 6 and sum(b - a for a, b in log) <= len(blob) + 1024
    fetch, fetch_ranges, _ = counting_fetch(blob)
    cache = DicomFrameCache(0, fetch, len(blob), fetch_ranges=fetch_ranges, path="mem://x")
    assert cache.read_frames(range(12)) == frames


def test_native_pixel_data_shorter_than_frames(counting_fetch):
    blob = bytearray(build_native(np.zeros((4, 4, 4), np.uint8)))
    pos = blob.index(b"\x28\x00\x08\x00IS")  # Number of Frames "4 " -> "9 "
    blob[pos + 8 : pos + 10] = b"9 "
    with pytest.raises(FrameIndexError, match="need 144"):
        index_of(bytes(blob), counting_fetch)


def test_no_preamble(counting_fetch):
    blob = build_native(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), preamble=False)
    assert blob[:2] == b"\x02\x00"
    _, index, _ = index_of(blob, counting_fetch)
    assert index.number_of_frames == 2 and index.frame_range(1)[1] - index.frame_range(1)[0] == 12


def test_bot_over_4gib_wraps(counting_fetch):
    """A 32-bit BOT of Pixel Data over 4 GiB wraps around; it is unwrapped."""
    from hdfsspec.dicom.frame_locations import _check_offsets

    class P:
        size, header_end, path = 6 * 2**30, 1000, "p"

    offsets = np.array([0, 3 * 2**30, (5 * 2**30) % 2**32], dtype=np.int64)
    out = _check_offsets(offsets, P, "Basic Offset Table", 0x7FE00010)  # type: ignore[arg-type]
    assert out.tolist() == [0, 3 * 2**30, 5 * 2**30]


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_attributes_that_break_the_frame_count_name_their_element(counting_fetch):
    """Number of Frames of 10**10 on a small object, a frame of no bytes (Rows 0), a
    Number of Frames that is no integer: FrameIndexError with the element's tag and the
    offset of its value (before: numpy's MemoryError, or offset 0 and the tag of Number
    of Frames whatever the element)."""
    import numpy as np

    from hdfsspec.testing import build_native

    native = build_native(np.zeros((2, 3, 4), dtype=np.uint8))
    cases = {
        "huge": (with_short_value(native, 0x00280008, b"IS", b"10000000000 "), 0x00280008, None),
        "rows": (with_short_value(native, 0x00280010, b"US", b"\x00\x00"), 0x7FE00010, None),
        "letters": (with_short_value(native, 0x00280008, b"IS", b"abc "), 0x00280008, b"abc "),
    }
    for name, (blob, tag, value) in cases.items():
        with pytest.raises(FrameIndexError) as err:
            index_of(blob, counting_fetch)
        assert err.value.tag == tag, name
        assert 0 <= err.value.offset < len(blob), name
        if value is not None:
            assert blob[err.value.offset : err.value.offset + len(value)] == value, name


def test_truncation_offsets_lie_within_the_object(counting_fetch):
    from conftest import CORPUS

    blob = CORPUS["bot.dcm"]
    pixel = blob.index(b"\xe0\x7f\x10\x00OB")
    for cut in (pixel + 10, pixel + 14, pixel + 20):
        with pytest.raises(TruncatedDicomError) as err:
            index_of(blob[:cut], counting_fetch)
        assert 0 <= err.value.offset <= cut
    with pytest.raises(NotDicomError) as err:
        index_of(b"", counting_fetch)
    assert err.value.offset == 0


def test_encapsulated_syntax_with_pixel_data_of_defined_length_is_refused(counting_fetch):
    """Its value holds the items, not native frames: before, it was indexed as native and
    read_frames returned slices of the item stream."""
    blob = build_encapsulated(fake_jpeg_frames(3, seed=8), offset_table="bot")
    tag = blob.index(b"\xe0\x7f\x10\x00OB")
    defined = blob[: tag + 8] + struct.pack("<L", len(blob) - tag - 12) + blob[tag + 12 :]
    with pytest.raises(FrameIndexError, match="defined length") as err:
        index_of(defined, counting_fetch)
    assert err.value.offset == tag and err.value.tag == 0x7FE00010

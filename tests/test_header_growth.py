"""A large header before native Pixel Data is read in two requests: its end follows from
the image attributes, even when its sequences have undefined lengths."""

from __future__ import annotations

import io

import fsspec
import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import saved
from oracle import reference_frames
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import hdfsspec
from hdfsspec._types import ReadOptions
from hdfsspec.cache.whole_index import build_index
from hdfsspec.dicom.header import native_pixel_offset
from hdfsspec.dicom.parse import parse_header
from hdfsspec.testing import CountingFileSystem, build_native, build_seg, build_slide

KIB = 1024


def _undefined_lengths(ds: Dataset) -> Dataset:
    """Every sequence and item of ``ds`` written with undefined length (as many writers do)."""
    for elem in ds:
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)
    return ds


def _with_large_header(blob: bytes, items: int, syntax: str | None = None) -> bytes:
    """``blob`` with a sequence of ``items`` items (about 90 bytes each) after the image
    attributes (group 0040, as the functional groups of group 5200 are), every sequence
    of undefined length."""
    ds = pydicom.dcmread(io.BytesIO(blob))
    ds.ContentSequence = Sequence()
    for k in range(items):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.{k}"
        ds.ContentSequence.append(item)
    return saved(_undefined_lengths(ds), syntax)


def _parse(blob: bytes, first_request: int = 16 * KIB):
    log: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> bytes:
        log.append((a, b))
        return blob[a:b]

    options = ReadOptions(first_request=first_request)
    parsed = parse_header(fetch, len(blob), path="mem://big.dcm", options=options)
    header_log = list(log)
    index, _ = build_index(parsed, lambda r: [fetch(a, b) for a, b in r], options)
    assert log == header_log  # native: the index costs nothing
    return parsed, index, log


PIXELS = np.random.default_rng(2).integers(0, 4096, (6, 40, 48), dtype=np.uint16)


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_a_large_header_of_undefined_length_sequences_is_read_in_two_requests(syntax):
    blob = _with_large_header(build_native(PIXELS, transfer_syntax=syntax), 3000, syntax)
    parsed, index, log = _parse(blob)
    value = parsed.header.pixel_value_offset
    assert value > 16 * KIB * 8  # the header: many times the first request
    # the first request, then the rest of the header exactly (doubling: 5 more requests)
    assert log == [(0, 16 * KIB), (16 * KIB, value)]
    got = [blob[a:b] for a, b in zip(index.starts.tolist(), index.stops.tolist(), strict=True)]
    assert got == reference_frames(blob)


def test_elements_after_the_pixel_data_make_the_guess_short_not_wrong():
    """Trailing padding: the Pixel Data begins earlier than the attributes say, so the
    guessed end lies inside it; the header is still exact, at the cost of those bytes."""
    trailing = b"\xfc\xff\xfc\xffOB\x00\x00" + (4000).to_bytes(4, "little") + bytes(4000)
    blob = _with_large_header(build_native(PIXELS, trailing=trailing), 3000)
    assert blob.endswith(trailing)
    parsed, index, log = _parse(blob)
    value = parsed.header.pixel_value_offset
    assert len(log) == 2 and log[1][1] == value + len(trailing)
    got = [blob[a:b] for a, b in zip(index.starts.tolist(), index.stops.tolist(), strict=True)]
    assert got == reference_frames(blob)


def test_the_guess_is_bounded(monkeypatch):
    """A guess farther than MAX_GUESS (large elements after the Pixel Data) is not taken."""
    import hdfsspec.dicom.walker

    trailing = b"\xfc\xff\xfc\xffOB\x00\x00" + (4000).to_bytes(4, "little") + bytes(4000)
    blob = _with_large_header(build_native(PIXELS, trailing=trailing), 3000)
    monkeypatch.setattr(hdfsspec.dicom.walker, "MAX_GUESS", 100 * KIB)  # the header is 270 KB
    parsed, _, log = _parse(blob)
    assert len(log) > 3 and log[1][1] < 40 * KIB  # doubling, as before
    # ... until the guess is near enough: taken then
    assert log[-1][1] == parsed.header.pixel_value_offset + len(trailing)


def test_attributes_that_promise_more_pixels_than_the_object_holds_are_no_guess():
    ds = pydicom.dcmread(io.BytesIO(_with_large_header(build_native(PIXELS), 3000)))
    ds.NumberOfFrames = 60_000  # 60,000 frames of 40 x 48 at 16 bits: beyond the object
    blob = saved(_undefined_lengths(ds))
    log: list[tuple[int, int]] = []
    fetch = lambda a, b: log.append((a, b)) or blob[a:b]  # noqa: E731
    parsed = parse_header(fetch, len(blob), options=ReadOptions(first_request=16 * KIB))
    assert parsed.header.pixel_value_offset == len(blob) - PIXELS.nbytes
    assert len(log) > 2  # read on as before: the first request, then doubling


def test_a_segmentation_header_of_undefined_lengths_costs_two_requests():
    seg, _ = build_seg(slices=100, segments=10, rows=64, cols=64)
    blob = saved(_undefined_lengths(pydicom.dcmread(io.BytesIO(seg))))
    target = fsspec.filesystem("memory")
    target.pipe_file("/growth/seg.dcm", blob)
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem(
        "dicom", fs=counting, skip_instance_cache=True, index_cache=False, first_request=32 * KIB
    )
    with hdfsspec.segread(fs.open("/growth/seg.dcm")) as got:
        header_end = got.file.header.header_end
        assert header_end > 32 * KIB * 3  # Rows (group 0028) within the first request
        value = got.file.header.header.pixel_value_offset
        assert counting.ranges[:2] == [
            ("/growth/seg.dcm", 0, 32 * KIB),
            ("/growth/seg.dcm", 32 * KIB, value),
        ]
        opened = counting.requests
        assert opened == 2
        volume = got.get_volume(segment_numbers=[2, 5]).array
        assert counting.requests - opened == 1 and counting.rounds == 3  # header: 2
    expected = hd.seg.segread(io.BytesIO(blob)).get_volume(segment_numbers=[2, 5]).array
    np.testing.assert_array_equal(volume, expected)


@pytest.mark.parametrize(
    ("attrs", "size", "expected"),
    [
        ({0x00280010: 4, 0x00280011: 5, 0x00280100: 16}, 1000, 1000 - 40),
        ({0x00280010: 3, 0x00280011: 3, 0x00280100: 8}, 100, 100 - 10),  # 9: padded
        ({0x00280010: 3, 0x00280011: 3, 0x00280100: 1, 0x00280008: 7}, 100, 100 - 8),  # packed
        (
            {0x00280010: 2, 0x00280011: 4, 0x00280100: 8, 0x00280002: 3}
            | {0x00280004: "YBR_FULL_422"},
            100,
            100 - 16,
        ),
        ({0x00280010: 4, 0x00280011: 5}, 1000, None),  # no Bits Allocated yet
        ({0x00280010: 4, 0x00280011: 5, 0x00280100: 16, 0x00280008: None}, 1000, None),
        ({0x00280010: 4, 0x00280011: 5, 0x00280100: 16, 0x00280008: 99}, 1000, None),
        ({0x00280010: 0, 0x00280011: 5, 0x00280100: 16}, 1000, None),
    ],
)
def test_native_pixel_offset(attrs, size, expected):
    assert native_pixel_offset(attrs, size) == expected


@pytest.mark.parametrize("offset_table", ["bot", "empty"])
def test_per_frame_functional_groups_of_undefined_length_cost_two_requests(offset_table):
    """TILED_SPARSE: one item a frame in the Per-Frame Functional Groups, often megabytes
    of undefined-length items before encapsulated pixels (no size to guess from). The
    items walked in the first request say where the sequence ends: the rest of the header
    is one request (before: doubling, 5 requests here)."""
    slide = build_slide(2048, 2048, tile=64, offset_table=offset_table, sparse=True)
    blob = saved(_undefined_lengths(pydicom.dcmread(io.BytesIO(slide))))
    log: list[tuple[int, int]] = []
    fetch = lambda a, b: log.append((a, b)) or blob[a:b]  # noqa: E731
    parsed = parse_header(fetch, len(blob), options=ReadOptions(first_request=16 * KIB))
    header_end = parsed.header_end
    assert header_end > 16 * KIB * 6  # 1024 items of about 150 bytes
    assert len(log) == 2 and log[0] == (0, 16 * KIB)
    assert header_end <= log[1][1] <= header_end + 16 * KIB + 2 * KIB  # estimate: +-1%

    target = fsspec.filesystem("memory")
    target.pipe_file("/growth/sparse.dcm", blob)
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem(
        "dicom", fs=counting, skip_instance_cache=True, index_cache=False, first_request=16 * KIB
    )
    window = {"row_start": 100, "row_end": 300, "column_start": 1500, "column_end": 1700}
    with hdfsspec.imread(fs.open("/growth/sparse.dcm")) as got:
        assert counting.requests == 2
        region = got.get_total_pixel_matrix(**window)
        if offset_table == "bot":  # the frames in one round (a row of tiles a range)
            assert counting.rounds == 3 and counting.requests <= 2 + 4
    expected = hd.imread(io.BytesIO(blob)).get_total_pixel_matrix(**window)
    np.testing.assert_array_equal(region, expected)


def test_a_wrong_number_of_frames_is_no_harm():
    """Number of Frames that does not match the items (not a valid object): the guess is
    short (the walk reads on, doubling) or long (it reads ahead, at most to the object's
    end and MAX_GUESS); the header is exact either way."""
    slide = build_slide(1024, 1024, tile=32, sparse=True)  # 1024 items
    for frames in (200, 20_000):
        ds = _undefined_lengths(pydicom.dcmread(io.BytesIO(slide)))
        ds.NumberOfFrames = frames
        blob = saved(ds)
        log: list[tuple[int, int]] = []
        fetch = lambda a, b, blob=blob, log=log: log.append((a, b)) or blob[a:b]  # noqa: E731
        parsed = parse_header(fetch, len(blob), options=ReadOptions(first_request=16 * KIB))
        assert parsed.dataset.NumberOfFrames == frames
        assert log[-1][1] <= len(blob) and len(log) <= 6
        if frames > 1024:
            assert log == [(0, 16 * KIB), (16 * KIB, len(blob))]
        whole = parse_header(lambda a, b, blob=blob: blob[a:b], len(blob))
        assert parsed.header == whole.header and parsed.header_end == whole.header_end

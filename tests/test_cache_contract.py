"""fsspec's contract for registered caches (as fsspec's own test_caches.py checks every one).

A cache is transparent for byte reads: on an object that is not DICOM (or whose
layout cannot be learnt) reads still return the right bytes; the typed error
comes from the DICOM operations (``index``, ``read_frames``).
"""

from __future__ import annotations

import pickle
import string

import pytest
from conftest import CORPUS

from hdfsspec import DicomFrameCache, NotDicomError, OffsetTableError
from hdfsspec.testing import build_encapsulated, fake_jpeg_frames

LETTERS = string.ascii_letters.encode()


def letters_fetcher(start: int, end: int) -> bytes:
    return LETTERS[start:end]


def zeros_fetcher(start: int, end: int) -> bytes:
    return b"0" * (end - start)


def test_getitem():
    cache = DicomFrameCache(4, letters_fetcher, len(LETTERS))
    assert cache._fetch(0, 4) == b"abcd"
    assert cache._fetch(None, 4) == b"abcd"
    assert cache._fetch(2, 4) == b"cd"


def test_empty_file():
    assert DicomFrameCache(5, zeros_fetcher, 0)._fetch(0, 0) == b""


@pytest.mark.parametrize(
    "requests",
    [[(0, 30), (0, 35), (51, 52)], [(0, 1), (1, 11), (1, 52)], [(0, 52), (11, 15)]],
)
@pytest.mark.parametrize("blocksize", [1, 10, 52, 100])
def test_basic(blocksize, requests):
    cache = DicomFrameCache(blocksize, letters_fetcher, len(LETTERS))
    for start, end in requests:
        assert cache._fetch(start, end) == LETTERS[start:end]


def test_not_dicom_raises_only_for_dicom_operations():
    cache = DicomFrameCache(5, letters_fetcher, len(LETTERS), path="mem://letters")
    assert cache._fetch(3, 9) == LETTERS[3:9]
    with pytest.raises(NotDicomError) as err:
        cache.read_frames([0])
    assert err.value.path == "mem://letters" and err.value.offset == len(
        LETTERS
    )  # its end: no room for DICM at 128


def test_pickleable_before_and_after_reads():
    cache = DicomFrameCache(5, zeros_fetcher, 100)
    cache._fetch(0, 5)
    again = pickle.loads(pickle.dumps(cache))
    assert isinstance(again, DicomFrameCache)
    assert (again.blocksize, again.size) == (5, 100)
    assert again._fetch(0, 10) == b"0" * 10
    blob = CORPUS["eot.dcm"]
    cache = DicomFrameCache(0, _Slicer(blob), len(blob))
    frames = cache.read_frames([1, 2])
    again = pickle.loads(pickle.dumps(cache))
    assert again.read_frames([1, 2]) == frames and again.index == cache.index


class _Slicer:
    """A picklable fetcher over a blob."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __call__(self, start: int, end: int) -> bytes:
        return self.blob[start:end]


def test_corrupt_offset_table_still_reads_bytes_but_not_frames():
    import struct

    blob = bytearray(build_encapsulated(fake_jpeg_frames(4), offset_table="bot"))
    pos = blob.index(b"\xfe\xff\x00\xe0\x10\x00\x00\x00")
    blob[pos + 12 : pos + 16] = struct.pack("<L", 0)  # BOT not increasing
    blob = bytes(blob)
    cache = DicomFrameCache(0, _Slicer(blob), len(blob), path="p")
    assert cache._fetch(0, len(blob)) == blob
    with pytest.raises(OffsetTableError):
        cache.read_frames([1])


def test_not_dicom_is_detected_once():
    calls: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        calls.append((start, end))
        return LETTERS[start:end]

    cache = DicomFrameCache(5, fetch, len(LETTERS))
    for k in range(5):
        assert cache._fetch(k, k + 3) == LETTERS[k : k + 3]
    assert calls == [(0, len(LETTERS))]  # the header attempt held it all: no more reads
    with pytest.raises(NotDicomError):
        cache.read_frames([0])
    assert len(calls) == 1


@pytest.mark.parametrize("kind", ["text", "random", "no-preamble"])
def test_bytes_of_an_object_without_layout_are_read_ahead_as_fsspec_does(kind):
    """Not DICOM, or DICOM hdfsspec cannot index (no preamble): small reads are served
    from blocks of ``first_request`` bytes, not a request each (before: 2,001 GETs to
    read a 60 kB text file line by line, 255 for pydicom to read a 2.5 kB object)."""
    import io
    import random

    import fsspec
    import pydicom
    from pydicom.data import get_testdata_file

    from hdfsspec.testing import CountingFileSystem

    if kind == "text":
        blob = "".join(f"line {k} of the text\n" for k in range(12_000)).encode()
    elif kind == "random":
        blob = random.Random(3).randbytes(300_000)
    else:
        from pathlib import Path

        blob = Path(get_testdata_file("rtstruct.dcm")).read_bytes()
    target = fsspec.filesystem("memory")
    target.pipe(f"/plain-{kind}", blob)
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem("dicom", fs=counting, skip_instance_cache=True, first_request=16384)
    with fs.open(f"/plain-{kind}") as f:
        if kind == "no-preamble":
            assert pydicom.dcmread(f, force=True) == pydicom.dcmread(io.BytesIO(blob), force=True)
        else:
            assert b"".join(f) == blob  # line by line
            for start in (1000, 250, 5000, 17, 99_000):
                f.seek(start)
                assert f.read(100) == blob[start : start + 100]
    blocks = -(-len(blob) // 16384)
    assert counting.bytes <= 2 * len(blob) + 6 * 16384
    assert counting.requests <= blocks + 6


def test_pickled_without_the_bytes_kept_for_byte_reads():
    blob = build_encapsulated(
        fake_jpeg_frames(40, min_size=4000, max_size=5000), offset_table="bot"
    )
    cache = DicomFrameCache(0, _Slicer(blob), len(blob), first_request=4096)
    start = cache.index.frame_range(30)[0]
    held = cache._fetch(start, start + 16)  # within frame 30: kept at hand for the next read
    assert cache._last[2]
    again = pickle.loads(pickle.dumps(cache))
    assert again._last == (0, 0, b"") and again._tail is None
    assert again._fetch(start, start + 16) == held == blob[start : start + 16]

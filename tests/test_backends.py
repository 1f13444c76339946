"""Every read over every backend (memory, file, HTTP Range server, S3 moto server on loopback).

Each test asserts the values and what they cost: requests, rounds and bytes.
"""

from __future__ import annotations

import io

import fsspec
import highdicom as hd
import numpy as np
import pytest
from conftest import CORPUS
from oracle import reference_frames

import hdfsspec
from hdfsspec.dicom.tiff import tiff_ifd_offset
from hdfsspec.io.planning import block_range
from hdfsspec.testing import build_encapsulated, build_slide, fake_jpeg_frames, jpeg_tiles

TILES = jpeg_tiles(5, 64, 3)
SLIDE = build_slide(512, 512, tile=64, tiles=TILES)  # 8 x 8 tiles of 64 px
REGION = {"row_start": 100, "row_end": 228, "column_start": 40, "column_end": 168}  # 3x3 tiles


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_frames_equal_pydicom_through_dicom_url(backend, name):
    blob = CORPUS[name]
    path = backend.put(name, blob)
    url = "dicom::" + backend.url(path)
    with fsspec.open(url, "rb", **backend.storage_options) as f:
        assert isinstance(f, hdfsspec.DicomFile)
        frames = f.read_frames(range(f.index.number_of_frames))
        assert frames == reference_frames(blob)
        # cost: the header, then one round for all the frames (and the last frame's end)
        assert f.stats.phases["header"].requests == 1
        assert f.stats.requests <= 3
        assert f.stats.bytes <= len(blob) + 8 * f.index.number_of_frames + 64 * 1024
        f.seek(0)
        assert f.read() == blob


def test_cold_open_is_one_request_and_one_frame_one_request(backend):
    path = backend.put("bot.dcm", CORPUS["bot.dcm"])
    fs, counting = backend.counted(first_request=1024)
    with fs.open(path) as f:
        index = f.index
        assert (counting.requests, counting.bytes) == (1, 1024)
        start, stop = block_range(index, 5)
        assert stop < len(CORPUS["bot.dcm"]) and start >= 1024
        frame = f.read_frames([5])[0]
        assert frame == reference_frames(CORPUS["bot.dcm"])[5]
        assert counting.requests == 2
        assert counting.ranges[-1][1:] == (start, stop)  # exactly the frame item + next header
        assert counting.bytes == 1024 + stop - start
        assert f.read_frames([5])[0] == frame  # cached: no request
        assert counting.requests == 2 and f.stats.phases["frames"].hits == 1


def test_region_of_3x3_tiles_is_one_round_of_at_most_3_ranges(backend):
    path = backend.put("slide.dcm", SLIDE)
    fs, counting = backend.counted()
    im = hdfsspec.imread(fs.open(path))
    try:
        opened = counting.requests
        assert opened == 1
        before = counting.rounds
        region = im.get_total_pixel_matrix(**REGION)
        assert counting.rounds == before + 1
        assert counting.requests - opened <= 3
        tiles_bytes = sum(b - a for _, a, b in counting.ranges[opened:])
        assert tiles_bytes <= 3 * 3 * max(len(t) for t in TILES) + 3 * 3 * 8 * 3
    finally:
        im.close()
    expected = hd.imread(io.BytesIO(SLIDE)).get_total_pixel_matrix(**REGION)
    assert np.array_equal(region, expected)


def test_thousand_frames_without_offset_table_open_in_few_requests(backend):
    frames = fake_jpeg_frames(1000, seed=11, min_size=400, max_size=1600)
    blob = build_encapsulated(frames, offset_table="empty")
    path = backend.put("big_empty.dcm", blob)
    fs, counting = backend.counted()
    with fs.open(path) as f:
        assert f.index.number_of_frames == 1000
        assert counting.requests <= 10
        assert counting.bytes <= len(blob)
        got = f.read_frames([0, 500, 999])
        assert got == [frames[0], frames[500], frames[999]]


def test_read_spanning_frames_is_one_coalesced_request(backend):
    blob = build_encapsulated(
        fake_jpeg_frames(40, min_size=3000, max_size=4000), offset_table="eot"
    )
    path = backend.put("span.dcm", blob)
    fs, counting = backend.counted(first_request=8192)
    with fs.open(path) as f:
        index = f.index
        opened = counting.requests
        assert opened == 1 and len(f.header.prefix) < index.frame_range(10)[0]
        a, b = index.frame_range(10)[0] + 5, index.frame_range(13)[1] - 5
        f.seek(a)
        assert f.read(b - a) == blob[a:b]
        assert counting.requests == opened + 1  # one coalesced range for frames 10-13
        assert counting.ranges[-1][1:] == (index.frame_range(10)[0], index.frame_range(13)[1] + 8)
        assert (
            counting.bytes
            == len(f.header.prefix) + index.frame_range(13)[1] + 8 - (index.frame_range(10)[0])
        )


def test_backend_files_take_cache_type_dicom(backend):
    if backend.name in ("memory", "file"):
        pytest.skip("memory and local files take no fsspec cache")
    path = backend.put("slide.dcm", SLIDE)
    with backend.target.open(
        path, "rb", cache_type="dicom", cache_options={"first_request": 4096}
    ) as f:
        assert isinstance(f.cache, hdfsspec.DicomFrameCache)
        im = hd.imread(f, lazy_frame_retrieval=True)
        region = im.get_total_pixel_matrix(**REGION)
        assert f.cache.stats.phases["header"].requests == 1
        assert f.cache.stats.phases["frames"].requests == 9  # highdicom asks frame by frame
    expected = hd.imread(io.BytesIO(SLIDE)).get_total_pixel_matrix(**REGION)
    assert np.array_equal(region, expected)


def test_http_server_ignoring_range_still_reads_correctly():
    from hdfsspec.testing import RangeHTTPServer

    blob = build_encapsulated(
        fake_jpeg_frames(100, min_size=2000, max_size=3000), offset_table="bot"
    )
    assert len(blob) > 3 * 65536
    with RangeHTTPServer({"whole.dcm": blob}, ignore_range=True) as server:
        with fsspec.open("dicom::" + server.url("whole.dcm")) as f:
            assert f.read_frames(list(range(100))) == reference_frames(blob)
            f.seek(100_000)
            assert f.read(50_000) == blob[100_000:150_000]
            assert f.stats.requests == 1 and f.stats.bytes == len(blob)
        # the first response carried the whole object; everything was served from it
        assert server.log.requests == 1 and server.log.bytes == len(blob)


def test_dual_tiff_without_offset_table_is_indexed_by_its_tile_table(backend):
    frames = fake_jpeg_frames(3000, seed=12, min_size=300, max_size=700)
    blob = build_encapsulated(frames, offset_table="empty", dual_tiff=True)
    path = backend.put("dual.dcm", blob)
    fs, counting = backend.counted()
    with fs.open(path) as f:
        assert f.header.header.pixel_data_offset is not None
        assert counting.requests == 1  # the header
        index = f.index
        assert index.offset_table == "tiff"
        # the IFD with the rest of the object after it (its two 12 kB arrays): no scan
        assert counting.requests == 2 and counting.rounds == 2
        assert counting.bytes <= 64 * 1024 + 2 * 4 * 3000 + 512
        assert counting.ranges[1][1:] == (tiff_ifd_offset(blob[:16]).ifd_offset, len(blob))
        got = f.read_frames([7, 1500, 2999])
        assert got == [frames[7], frames[1500], frames[2999]]
        assert counting.requests == 3  # one round of exact ranges (or one bridged range)


LARGE_BOT = build_encapsulated(
    fake_jpeg_frames(20_000, seed=13, min_size=16, max_size=32), offset_table="bot"
)


def test_metadata_costs_one_request_and_a_large_bot_is_read_with_the_index(backend):
    path = backend.put("large_bot.dcm", LARGE_BOT)
    fs, counting = backend.counted()
    with fs.open(path) as f:
        header = f.header
        assert header.dataset.NumberOfFrames == 20_000
        assert header.bot is None and header.bot_span[1] - header.bot_span[0] == 80_000
        assert (counting.requests, counting.bytes) == (1, 64 * 1024)  # BOT not read yet
        assert f.cache.layout.ahead is None  # most entries are held: read only if needed
        # the first ~16,000 entries are held: their frames need no table request
        start, stop = block_range(f.cache.view(frames=101), 100)
        assert f.read_frames([100]) == [reference_frames(LARGE_BOT)[100]]
        assert counting.requests == 2 and counting.ranges[-1][1:] == (start, stop)
        frame = f.read_frames([19_000])[0]
        assert frame == reference_frames(LARGE_BOT)[19_000]
        # the rest of the BOT (exactly), then the frame
        assert counting.ranges[2][1:] == (64 * 1024, header.bot_span[1])
        assert counting.requests == 4 and f.index.number_of_frames == 20_000
        f.seek(header.bot_span[0])  # byte reads of the table are served from memory
        assert f.read(80_000) == LARGE_BOT[header.bot_span[0] : header.bot_span[1]]
        assert counting.requests == 4


def test_a_bot_mostly_beyond_the_first_request_is_read_behind_the_open(backend):
    path = backend.put("large_bot.dcm", LARGE_BOT)
    fs, counting = backend.counted(first_request=16 * 1024)  # ~4,000 of 20,000 entries held
    with fs.open(path) as f:
        header = f.header
        assert header.bot is None and header.bot_span[1] - header.bot_span[0] == 80_000
        # the open waits for one request; the rest of the BOT is read behind it, exactly
        assert f.cache.layout.ahead is not None and f.cache.layout.ahead.result() is not None
        assert counting.ranges[:2] == [(path, 0, 16 * 1024), (path, 16 * 1024, header.bot_span[1])]
        assert counting.bytes == header.bot_span[1]
        frame = f.read_frames([19_000])[0]
        assert frame == reference_frames(LARGE_BOT)[19_000]
        start, stop = block_range(f.index, 19_000)  # the table was in: the frame alone
        assert counting.requests == 3 and counting.ranges[-1][1:] == (start, stop)
        assert f.stats.phases["index"].requests == 1 and f.stats.phases["index"].hits == 1


def test_a_missing_object_raises_file_not_found_naming_it(backend):
    """The target's error type; its message names the object (S3's own did not: the
    open's ranged GetObject said only "The specified key does not exist.")."""
    path = backend.put("present.dcm", SLIDE).replace("present.dcm", "absent-object.dcm")
    fs = fsspec.filesystem("dicom", fs=backend.target, skip_instance_cache=True)
    with pytest.raises(FileNotFoundError, match=r"absent-object\.dcm"):
        fs.open(path)
    with pytest.raises(FileNotFoundError, match=r"absent-object\.dcm"):
        hdfsspec.imread(backend.url(path), backend.storage_options)


def test_opening_a_directory_raises_is_a_directory(backend):
    if backend.name == "http":
        pytest.skip("HTTP has no directories")
    path = backend.put("inside-a-directory.dcm", SLIDE).rsplit("/", 1)[0]
    fs = fsspec.filesystem("dicom", fs=backend.target, skip_instance_cache=True)
    with pytest.raises(IsADirectoryError):
        fs.open(path).read(10)
    if backend.name == "s3":  # the bucket itself (s3fs: a ValueError of its own open)
        with pytest.raises(IsADirectoryError):
            fs.open(path.split("/", 1)[0])

"""Readahead in frames: a caller reading frame by frame, or byte by byte, does not pay a
round trip per frame; random access fetches nothing ahead.

Wall time is measured in ``benchmarks/`` (loops of ``get_raw_frame``, ``pydicom.dcmread``
and ``read()`` loops on a ``dicom::`` file, beside s3fs and a local copy).
"""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pydicom
import pytest
from conftest import make_backend

import hdfsspec
from hdfsspec.cache.readahead import GROWTH, MIN_RUN, FramePattern
from hdfsspec.testing import build_encapsulated, fake_jpeg_frames

FRAMES = fake_jpeg_frames(300, seed=19, min_size=900, max_size=1100)  # about 300 KB
SIZE = 1000  # bytes per frame, for the pure pattern tests


def pattern(total: int = 1000, cap: int = 64 * SIZE) -> FramePattern:
    return FramePattern(total, lambda a, b: (b - a + 1) * SIZE, cap)


# -- the pattern, pure ----------------------------------------------------------------------
def test_frames_read_in_order_get_windows_that_grow_to_the_cap():
    p = pattern()  # a cap of 64 frames: the first window is 8
    assert [p.observe(f, f) for f in range(MIN_RUN)] == [[]] * MIN_RUN  # no pattern yet
    first = p.observe(MIN_RUN, MIN_RUN)
    assert first == list(range(MIN_RUN + 1, MIN_RUN + 9))  # an eighth of the cap, after it
    start = MIN_RUN + 9
    assert p.observe(MIN_RUN + 1, MIN_RUN + 1) == list(range(start, start + 8 * GROWTH))
    # entering the first window hands out the third: two stay in flight ahead of the reader
    third = start + 8 * GROWTH
    assert p.observe(MIN_RUN + 2, MIN_RUN + 2) == list(range(third, third + 64))
    assert p.observe(MIN_RUN + 3, MIN_RUN + 3) == []  # within the windows handed out
    windows = [len(first), 8 * GROWTH, 64]
    for f in range(MIN_RUN + 4, 1000):
        ahead = p.observe(f, f)
        if ahead:
            assert ahead[0] > f and ahead == list(range(ahead[0], ahead[-1] + 1))
            windows.append(len(ahead))
    assert windows[:4] == [8, 32, 64, 64] and max(windows) == 64  # capped at 64 frames
    assert p.scheduled == 999  # up to the last frame, never beyond


def test_reads_across_frames_count_as_forward():
    p = pattern()
    got = [p.observe(3 * k, 3 * k + 3) for k in range(MIN_RUN + 1)]
    assert got[:MIN_RUN] == [[]] * MIN_RUN and got[MIN_RUN]  # a read() loop, 4 frames a read
    assert p.observe(3 * MIN_RUN, 3 * MIN_RUN + 3) == []  # the same frames: more small reads


def test_random_access_fetches_nothing_ahead():
    p = pattern()
    rng = np.random.default_rng(3)
    got = [p.observe(int(f), int(f)) for f in rng.permutation(1000)[:300]]
    assert sum(map(len, got)) == 0


def test_a_pattern_ends_with_a_jump_and_starts_again():
    p = pattern()
    for f in range(10):
        p.observe(f, f)
    assert [p.observe(f, f) for f in range(500, 500 + MIN_RUN)] == [[]] * MIN_RUN
    assert p.observe(500 + MIN_RUN, 500 + MIN_RUN)[:1] == [501 + MIN_RUN]  # a new run, small


def test_tiles_of_a_small_region_fetch_nothing_ahead():
    p = pattern()
    got = [p.observe(r * 40 + c, r * 40 + c) for r in range(10, 13) for c in range(5, 8)]
    assert got == [[]] * 9  # 3 x 3 tiles, one read each: no run long enough, one step seen


@pytest.mark.parametrize("width", [4, 6])
def test_rows_read_a_tile_at_a_time_are_followed_by_rows(width):
    p = pattern()
    ahead, stray = [], []
    for r in range(10):
        for c in range(5, 5 + width):  # rows of `width` tiles, 40 tiles wide
            for f in p.observe(r * 40 + c, r * 40 + c):
                (ahead if 5 <= f % 40 < 5 + width and f // 40 > r else stray).append(f)
    # until the step has repeated, a row of more than MIN_RUN steps is a forward run: windows
    # past its end, in the first rows only; a row of 4 tiles (3 steps) fetches nothing
    if width - 1 < MIN_RUN:
        assert stray == []
    else:
        assert stray and max(stray) < (MIN_RUN + 1) * 40
    # strided from the row after MIN_RUN equal jumps: the rows to come, once each
    first = (MIN_RUN + 1) * 40 + 5
    assert first in ahead and (width - 1 >= MIN_RUN or ahead[0] == first)
    assert len(set(ahead)) == len(ahead)  # each handed out once


# -- through real servers -----------------------------------------------------------------
@pytest.fixture(params=["http", "s3"])
def store(request, tmp_path_factory):
    return make_backend(request.param, request, tmp_path_factory)


def _open(store, blob, **options):
    path = store.put(f"ra-{len(blob)}-{options.get('readahead')}.dcm", blob)
    fs, counting = store.counted(index_cache=False, first_request=4096, **options)
    return fs.open(path), counting


@pytest.mark.parametrize("table", ["bot", "empty"])
def test_a_loop_of_single_frames_costs_a_few_rounds(store, table):
    blob = build_encapsulated(FRAMES, offset_table=table)
    with _open(store, blob)[0] as f:
        counting = f.fs.fs
        counting.reset()
        for k in range(len(FRAMES)):
            assert f.read_frames([k]) == [FRAMES[k]]
        assert counting.requests <= 16  # windows growing x4, not one request per frame
        assert counting.bytes <= 1.05 * len(blob)


def test_without_readahead_each_frame_is_a_request(store):
    blob = build_encapsulated(FRAMES[:40], offset_table="bot")
    f, counting = _open(store, blob, readahead=False)
    with f:
        held = len(f.header.prefix)  # the first request's bytes hold the first frames
        stops = f.index.stops.copy()
        stops[-1] = len(blob)  # the last frame's end: not in a Basic Offset Table
        beyond = int((stops + 8 > held).sum())
        counting.reset()
        for k in range(40):
            assert f.read_frames([k]) == [FRAMES[k]]
        assert counting.requests == beyond > 30


def test_random_single_frames_fetch_only_their_own_bytes(store):
    blob = build_encapsulated(FRAMES, offset_table="bot")
    f, counting = _open(store, blob)
    wanted = [int(k) for k in np.random.default_rng(5).permutation(len(FRAMES))[:60]]
    wanted = [k for i, k in enumerate(wanted) if i == 0 or abs(k - wanted[i - 1]) > 1]
    with f:
        held = len(f.header.prefix)
        stops = f.index.stops
        wanted = [k for k in wanted if held < stops[k] + 8]  # not in the first request
        counting.reset()
        for k in wanted:
            assert f.read_frames([k]) == [FRAMES[k]]
        exact = sum(len(FRAMES[k]) + 16 for k in wanted)  # item headers, the next one's too
        assert counting.requests == len(wanted) > 40
        assert counting.bytes <= exact


@pytest.mark.parametrize("table", ["bot", "empty"])
def test_small_reads_of_the_whole_file_read_it_about_once(store, table):
    blob = build_encapsulated(FRAMES, offset_table=table)
    f, counting = _open(store, blob)
    with f:
        out = io.BytesIO()
        while chunk := f.read(700):  # smaller than a frame: pydicom reads 128 bytes at times
            out.write(chunk)
        assert out.getvalue() == blob
        assert counting.requests <= 20
        assert counting.bytes <= 1.05 * len(blob) + 4096


def test_pydicom_reads_a_dicom_file_in_a_few_requests(store):
    blob = build_encapsulated(FRAMES, offset_table="empty")
    f, counting = _open(store, blob)
    with f:
        ds = pydicom.dcmread(f)
        assert ds.PixelData == pydicom.dcmread(io.BytesIO(blob)).PixelData
        assert counting.requests <= 20
        assert counting.bytes <= 1.05 * len(blob) + 4096


def test_highdicom_frame_loop_reads_ahead(store):
    blob = build_encapsulated(FRAMES, offset_table="bot")
    f, counting = _open(store, blob)
    with hdfsspec.imread(f) as im:
        counting.reset()
        for k in range(1, len(FRAMES) + 1):
            assert im.get_raw_frame(k) == FRAMES[k - 1]
        assert counting.requests <= 16
        assert counting.bytes <= 1.05 * len(blob)


def test_windows_ahead_stay_within_the_cache_bound(store):
    blob = build_encapsulated(FRAMES, offset_table="bot")
    bound = 64 * 1024
    f, counting = _open(store, blob, max_cache_bytes=bound)
    with f:
        f.index  # noqa: B018
        counting.reset()
        for k in range(len(FRAMES)):
            assert f.read_frames([k]) == [FRAMES[k]]
        sizes = [stop - start for _, start, stop in counting.ranges]
        assert max(sizes) <= bound // 8 + 2 * 1200  # a window, with the frame read
        assert counting.requests >= len(blob) // (bound // 8)
        assert counting.bytes <= 1.05 * len(blob)


def test_a_window_starts_after_the_frames_held():
    held = 50  # the first request's bytes hold frames 0..49
    p = FramePattern(1000, lambda a, b: (b - a + 1) * SIZE, 64 * SIZE, lambda f: f < held)
    assert [p.observe(f, f) for f in range(MIN_RUN)] == [[]] * MIN_RUN
    assert p.observe(MIN_RUN, MIN_RUN) == list(range(held, held + 8))  # not frames held
    for f in range(MIN_RUN + 1, held):
        assert p.observe(f, f) == []  # the reader is in the frames held: nothing new yet
    assert p.observe(held, held) == list(range(held + 8, held + 8 + 8 * GROWTH))


def test_no_window_of_a_few_last_frames_on_its_own():
    # windows 8, 32, 64, 64 frames from frame MIN_RUN + 1 reach frame 172; 10 are left
    p = pattern(total=183)
    windows = [ahead for f in range(183) if (ahead := p.observe(f, f))]
    assert [len(w) for w in windows] == [8, 32, 64, 74]  # the last ten with the window
    assert windows[-1][-1] == 182


def test_a_read_loop_is_followed_from_the_first_request(store):
    blob = build_encapsulated(FRAMES, offset_table="bot")
    path = store.put("ra-prefix.dcm", blob)
    fs, counting = store.counted(index_cache=False, first_request=32768)
    with fs.open(path) as f:
        held = len(f.header.prefix)  # about 30 frames
        counting.reset()
        out = io.BytesIO()
        while chunk := f.read(700):
            out.write(chunk)
        assert out.getvalue() == blob
        # the reads in the first request's frames made the pattern: what follows them
        # comes in windows ahead (in whatever order their threads sent them), not in the
        # few frames of one read
        ranges = sorted((start, stop) for _, start, stop in counting.ranges)
        assert ranges[0][0] <= held  # from the end of what is held
        small = [(a, b) for a, b in ranges[:-1] if b - a < 8 * 1000]
        assert len(small) <= 1  # at most the rest of the frame the first request cuts
        assert counting.requests <= 4  # (before: 6, two of them a frame each)
        assert counting.bytes <= 1.05 * len(blob)


def test_pydicom_reads_the_sequence_delimiter_from_the_last_frame(store):
    blob = build_encapsulated(FRAMES, offset_table="bot")
    f, counting = _open(store, blob)
    with f:
        counting.reset()
        ds = pydicom.dcmread(f)
        assert ds.PixelData == pydicom.dcmread(io.BytesIO(blob)).PixelData
        # the delimiter's 8 bytes came with the last frame's block (its next item head)
        assert all(stop - start > 8 for _, start, stop in counting.ranges)
        assert counting.bytes <= 1.05 * len(blob)


def test_threads_reading_the_last_frame_walk_to_its_end_once(store):
    import threading

    blob = build_encapsulated(FRAMES, offset_table="bot")  # the last frame's end: unknown
    f, counting = _open(store, blob, readahead=False)
    last = len(FRAMES) - 1
    with f:
        f.index  # noqa: B018
        counting.reset()
        start = threading.Barrier(4)
        got: list[bytes] = []

        def read() -> None:
            start.wait()
            got.extend(f.read_frames([last]))

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == [FRAMES[last]] * 4
        assert counting.requests == 1  # one thread walks; the others wait for its walk


def test_windows_that_stream_may_be_twice_as_long():
    """A streamed window serves each frame as it comes: its length costs its reader no
    wait, so the cap is four round trips of the link, not two (a window read whole)."""
    from hdfsspec.cache.dicom_cache import DicomFrameCache
    from hdfsspec.io.link import LinkModel

    blob = build_encapsulated(fake_jpeg_frames(30, seed=2), offset_table="bot")
    link = LinkModel(concurrency=4, rtt=0.02, bandwidth=50e6, learn=False)  # 1 MB a trip

    def cache(**options):
        return DicomFrameCache(
            0,
            lambda a, b: blob[a:b],
            len(blob),
            fetch_ranges=lambda r: [blob[a:b] for a, b in r],
            link=link,
            max_cache_bytes=2**30,
            **options,
        )

    whole, streamed = cache(), cache(stream_ranges=lambda ranges, sink: None)
    assert not whole.requests.can_stream and streamed.requests.can_stream
    assert whole.frames._ahead_cap() == 2 * 2**20  # 2 x 1 MB, raised to 2 MiB
    assert streamed.frames._ahead_cap() == 4 * 1_000_000


def test_a_pydicom_walk_steps_the_pattern_once_a_frame(monkeypatch):
    """pydicom reads each item's tag and length (two small reads): the tag, at the end of
    the frame before's block, is served from the new frame's own block, so the length
    read is a read within the frame last read, with no step of its own."""
    frames = fake_jpeg_frames(64)
    blob = build_encapsulated(frames, offset_table="bot")
    memory = fsspec.filesystem("memory")
    memory.pipe("/readahead-walk.dcm", blob)
    fs = hdfsspec.DicomFileSystem(fs=memory, index_cache=False, first_request=2048)
    steps = []
    observe = FramePattern.observe

    def counted(self, first, last):
        steps.append((first, last))
        return observe(self, first, last)

    monkeypatch.setattr(FramePattern, "observe", counted)
    with fs.open("/readahead-walk.dcm") as f:
        ds = pydicom.dcmread(f)
        assert ds.PixelData == pydicom.dcmread(io.BytesIO(blob)).PixelData
        stats = f.stats
    assert len(steps) <= 1.1 * len(frames)  # two a frame before (one a read)
    assert stats.requests <= 5 and stats.bytes <= 1.05 * len(blob)  # header, table, windows

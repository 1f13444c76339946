"""``plan()`` is a dry run: no frame fetched, no walk of the items; a read fetches its ranges."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import make_backend
from pydicom.encaps import generate_frames
from test_backends import TILES

import hdfsspec
from hdfsspec.testing import build_slide

KiB = 1024
TILE = 64
SIDE = 1024  # 16 x 16 tiles of 64 px: 256 frames, some 400 KB
CORNER = {"row_start": 897, "row_end": 1025, "column_start": 897, "column_end": 1025}
MIDDLE = {"row_start": 480, "row_end": 560, "column_start": 300, "column_end": 400}


def _tiles(region: dict[str, int]) -> tuple[int, ...]:
    """The frames (0-based, row-major) of a region (1-based pixels, ends excluded)."""
    rows = range((region["row_start"] - 1) // TILE, (region["row_end"] - 2) // TILE + 1)
    cols = range((region["column_start"] - 1) // TILE, (region["column_end"] - 2) // TILE + 1)
    return tuple(r * (SIDE // TILE) + c for r in rows for c in cols)


CORNER_FRAMES = _tiles(CORNER)  # the last 2 x 2 tiles, the last frame (255) included
MIDDLE_FRAMES = _tiles(MIDDLE)  # tile rows 7-8, tile columns 4-6
assert CORNER_FRAMES == (238, 239, 254, 255) and len(MIDDLE_FRAMES) == 6


def _slide(table: str) -> bytes:
    tiff = table == "tiff"
    table = "empty" if tiff else table
    return build_slide(SIDE, SIDE, tile=TILE, tiles=TILES, offset_table=table, dual_tiff=tiff)


SLIDES = {table: _slide(table) for table in ("bot", "eot", "tiff", "empty")}


def _local_frames(blob: bytes) -> list[bytes]:
    ds = pydicom.dcmread(io.BytesIO(blob))
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


@pytest.fixture(params=["memory", "http", "s3"])
def store(request, tmp_path_factory):
    return make_backend(request.param, request, tmp_path_factory)


def _since(counting, n: int) -> list[tuple[int, int]]:
    return [(a, b) for _, a, b in counting.ranges[n:]]


@pytest.mark.parametrize("table", ["bot", "eot", "tiff"])
@pytest.mark.parametrize(("region", "frames"), [(MIDDLE, MIDDLE_FRAMES), (CORNER, CORNER_FRAMES)])
def test_a_plan_with_an_offset_table_is_what_the_read_then_fetches(store, table, region, frames):
    blob = SLIDES[table]
    path = store.put(f"plan-{table}.dcm", blob)
    fs, counting = store.counted()
    with hdfsspec.imread(fs.open(path)) as im:
        stats = im.file.stats
        opened, index_before = counting.requests, stats.phases["index"].requests
        plan = im.plan("get_total_pixel_matrix", **region)
        tables = counting.requests - opened  # an offset table not read at the open
        assert tables <= 2 if table == "tiff" else tables == 0  # the TIFF tile table only
        assert stats.phases["index"].requests - index_before == tables
        assert plan.frames == frames and plan.unknown == ()
        assert plan.requests >= 1 and plan.nbytes == sum(b - a for a, b in plan.ranges)
        before, nbytes = counting.requests, counting.bytes
        pixels = im.get_total_pixel_matrix(**region)
        assert _since(counting, before) == list(plan.ranges)
        assert counting.bytes - nbytes == plan.nbytes
        again = im.plan("get_total_pixel_matrix", **region)
        assert again.frames == frames and again.ranges == () and again.unknown == ()
        assert counting.requests == before + plan.requests  # the second plan is free too
    expected = hd.imread(io.BytesIO(blob)).get_total_pixel_matrix(**region)
    assert np.array_equal(pixels, expected)


def test_the_last_frame_of_a_bot_only_object_is_planned_as_its_read_asks(store):
    """Only a Basic Offset Table: the last frame's end is found by reading from its start."""
    blob = SLIDES["bot"]
    path = store.put("plan-last.dcm", blob)
    expected = _local_frames(blob)
    last = len(expected) - 1
    fs, counting = store.counted()
    for frames in ([last], [last - 20, last]):
        with fs.open(path) as f:
            assert f.header.dataset.NumberOfFrames == last + 1  # the open's request
            opened = counting.requests
            plan = f.plan(frames)
            assert counting.requests == opened and plan.unknown == ()
            (first, stop) = plan.ranges[-1]
            assert stop - first >= 64 * KiB or stop == len(blob)  # room to find the end
            got = f.read_frames(frames)
            assert _since(counting, opened) == list(plan.ranges)
            assert f.index.frame_range(last)[0] == first
        assert got == [expected[k] for k in frames]


def test_a_plan_never_walks_an_object_without_offset_table(store):
    blob = SLIDES["empty"]
    path = store.put("plan-empty.dcm", blob)
    # small windows: a walk to the corner takes several rounds
    fs, counting = store.counted(scan_window=32 * KiB, scan_concurrency=2)
    with hdfsspec.imread(fs.open(path)) as im:
        stats = im.file.stats
        opened, nbytes = counting.requests, counting.bytes
        plan = im.plan("get_total_pixel_matrix", **CORNER)
        assert (counting.requests, counting.bytes) == (opened, nbytes)  # nothing fetched
        assert stats.phases["index"].requests == 0
        assert plan.frames == CORNER_FRAMES and plan.unknown == CORNER_FRAMES
        assert plan.ranges == () and plan.requests == 0 and plan.nbytes == 0
        first = im.plan("get_frames", [1, 2])  # held by the open's first request
        assert first.frames == (0, 1) and first.unknown == () and first.requests == 0
        assert counting.requests == opened

        corner = im.get_total_pixel_matrix(**CORNER)  # walks the items up to the corner
        walked = stats.phases["index"]
        assert walked.requests >= 2 and walked.bytes > len(blob) // 2
        after = counting.requests
        assert im.plan("get_total_pixel_matrix", **CORNER) == type(plan)(CORNER_FRAMES, ())
        middle = im.plan("get_total_pixel_matrix", **MIDDLE)  # passed by the walk: known
        assert middle.frames == MIDDLE_FRAMES and middle.unknown == ()
        assert counting.requests == after
        pixels = im.get_total_pixel_matrix(**MIDDLE)
        assert _since(counting, after) == list(middle.ranges)
    local = hd.imread(io.BytesIO(blob))
    assert np.array_equal(corner, local.get_total_pixel_matrix(**CORNER))
    assert np.array_equal(pixels, local.get_total_pixel_matrix(**MIDDLE))


def test_a_plan_of_frames_partly_walked_splits_known_and_unknown(store):
    blob = SLIDES["empty"]
    path = store.put("plan-partial.dcm", blob)
    expected = _local_frames(blob)
    fs, counting = store.counted(scan_window=32 * KiB, scan_concurrency=1)
    with fs.open(path) as f:
        assert f.read_frames([100]) == [expected[100]]  # walks the items up to frame 100
        walked = f.stats.phases["index"].requests
        before, nbytes = counting.requests, counting.bytes
        plan = f.plan([50, 101, 255])
        assert (counting.requests, counting.bytes) == (before, nbytes)
        assert f.stats.phases["index"].requests == walked
        assert 255 in plan.unknown and 50 not in plan.unknown
        assert set(plan.unknown) <= {101, 255}
        assert f.read_frames([50, 101, 255]) == [expected[k] for k in (50, 101, 255)]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([3, 1, np.int64(2)], [3, 1, 2]),
        (np.array([5, 4], dtype=np.uint16), [5, 4]),
        ((k for k in (7, 7)), [7, 7]),
        (range(3), [0, 1, 2]),
        ([], []),
        ([True], [1]),  # as operator.index says
    ],
)
def test_frame_numbers_take_any_integers_in_one_step(frames, expected):
    from hdfsspec.io.planning import distinct_frames, frame_numbers

    got = frame_numbers(frames)
    assert got == expected and all(type(f) is int for f in got)
    assert distinct_frames(got).tolist() == sorted(set(expected))


@pytest.mark.parametrize("frames", [[1, 2.5], [1, [2, 3]], [None], ["a"], np.array([2.0])])
def test_frame_numbers_that_are_not_integers_raise_type_error(frames):
    from hdfsspec.io.planning import frame_numbers

    with pytest.raises(TypeError, match="frame numbers must be integers"):
        frame_numbers(frames)

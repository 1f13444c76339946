"""Images and segmentations used from other threads than the one that made them.

dask's threaded scheduler, a thread pool of regions, a dask worker that unpickles its
arguments in one thread and runs the task in another: highdicom's own objects refuse
all of these (their SQLite tables belong to the thread that built them). hdfsspec's
objects are usable from any thread, their frames fetched once.
"""

from __future__ import annotations

import io
import itertools
import pickle
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import fsspec
import highdicom as hd
import numpy as np
import pytest
from oracle import reference_frames
from test_backends import SLIDE

import hdfsspec
from hdfsspec import TransportError
from hdfsspec.highdicom import readers as highdicom_io
from hdfsspec.testing import CountingFileSystem, build_seg

SEG, _ = build_seg(slices=16, segments=5, rows=64, cols=48, seed=3)
# 110 overlapping regions over the 8 x 8 tiles of 64 px (1-based, as highdicom takes them)
REGIONS = [
    {"row_start": r, "row_end": r + 100, "column_start": c, "column_end": c + 120}
    for r in range(1, 400, 37)
    for c in range(1, 380, 41)
]


@pytest.fixture(
    params=[
        pytest.param(
            True,
            id="serialized",
            marks=pytest.mark.skipif(
                sqlite3.threadsafety != 3, reason="SQLite here is not serialized"
            ),
        ),
        pytest.param(False, id="copied-source"),
    ]
)
def sqlite_mode(request, monkeypatch):
    """Both ways of sharing the tables: the building thread reads the source itself
    (serialized SQLite), or the source is a copy of its own (any SQLite)."""
    monkeypatch.setattr(highdicom_io, "SERIALIZED", request.param)
    return request.param


def _opened(name: str, blob: bytes, *, seg: bool = False):
    memory = fsspec.filesystem("memory")
    memory.pipe(f"/threads/{name}", blob)
    target = CountingFileSystem(fs=memory)
    # max_gap=0: exact frame ranges (a gap the cost model bridges, or a whole read, may
    # hold frames another thread fetches at the same time: bytes, not frames, twice)
    dfs = fsspec.filesystem(
        "dicom", fs=target, skip_instance_cache=True, first_request=4096, max_gap=0
    )
    reader = hdfsspec.segread if seg else hdfsspec.imread
    return reader(dfs.open(f"/threads/{name}")), target


ITEM_HEAD = 8  # a frame block ends with the next item's header: the next block starts there


def _no_frame_twice(target: CountingFileSystem) -> None:
    """No frame fetched twice: later calls found the frames of earlier ones cached."""
    spans = sorted((a, b) for _, a, b in target.ranges if a is not None and b is not None)
    for (_, stop), (start, _) in itertools.pairwise(spans):
        assert stop - start <= ITEM_HEAD
    assert target.bytes <= len(target.fs.cat_file(target.ranges[0][0])) + ITEM_HEAD * len(spans)


def test_highdicom_alone_refuses_another_thread():
    """What the mixin works around; should highdicom lift the limit, this fails and
    ``_BatchedFrames._share_across_threads`` can go."""
    im = hd.imread(io.BytesIO(SLIDE))
    with ThreadPoolExecutor(1) as pool, pytest.raises(sqlite3.ProgrammingError, match="thread"):
        pool.submit(im.get_total_pixel_matrix, **REGIONS[0]).result()


def test_regions_from_a_thread_pool_equal_local_and_fetch_each_frame_once(sqlite_mode):
    local = hd.imread(io.BytesIO(SLIDE))
    expected = [local.get_total_pixel_matrix(**r) for r in REGIONS]
    im, target = _opened("pool.dcm", SLIDE)
    with im, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: im.get_total_pixel_matrix(**r), REGIONS))
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
        assert 2 <= target.requests <= 1 + 64  # the header, then at most one a tile
        _no_frame_twice(target)


def test_an_image_unpickled_in_one_thread_reads_in_another(sqlite_mode):
    """A dask worker: arguments deserialised on one thread, the task run on another."""
    im, _ = _opened("worker.dcm", SLIDE)
    with im:
        payload = pickle.dumps(im)
    with ThreadPoolExecutor(1) as loader, ThreadPoolExecutor(1) as runner:
        copy = loader.submit(pickle.loads, payload).result()
        with copy:
            region = runner.submit(copy.get_total_pixel_matrix, **REGIONS[5]).result()
            stats = copy.file.stats.as_dict()
            assert stats["frames"]["requests"] >= 1 and stats["rounds"] <= 3
    expected = hd.imread(io.BytesIO(SLIDE)).get_total_pixel_matrix(**REGIONS[5])
    assert np.array_equal(region, expected)


@pytest.mark.parametrize("lazy", [True, False])
def test_segment_volumes_from_threads_equal_local(lazy, sqlite_mode):
    local = hd.seg.segread(io.BytesIO(SEG))
    subsets = [[1], [2, 3], [4], [5, 1], [3]]
    expected = [local.get_volume(segment_numbers=s).array for s in subsets]
    if lazy:
        seg, target = _opened("seg.dcm", SEG, seg=True)
    else:
        memory = fsspec.filesystem("memory")
        memory.pipe("/threads/seg-eager.dcm", SEG)
        target = CountingFileSystem(fs=memory)
        with target.open("/threads/seg-eager.dcm") as f:
            seg = hdfsspec.segread(f, lazy_frame_retrieval=False)
    with seg, ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda s: seg.get_volume(segment_numbers=s).array, subsets))
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
        _no_frame_twice(target)


class _FailingOnce(CountingFileSystem):
    """The first frame fetch waits for ``go``, then fails (a dropped connection)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.entered, self.go, self.failed = threading.Event(), threading.Event(), False

    def _first_frame_fails(self, start) -> None:
        if start and not self.failed:  # a frame, not the header
            self.failed = True
            self.entered.set()
            assert self.go.wait(10)
            raise ConnectionResetError("dropped")

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._first_frame_fails(start)
        return super().cat_file(path, start=start, end=end, **kwargs)

    def cat_ranges(self, paths, starts, ends, *args, **kwargs):
        self._first_frame_fails(starts[0])
        return super().cat_ranges(paths, starts, ends, *args, **kwargs)


def test_a_thread_waiting_for_frames_whose_fetch_failed_fetches_them_itself():
    memory = fsspec.filesystem("memory")
    memory.pipe("/threads/failing.dcm", SLIDE)
    target = _FailingOnce(fs=memory)
    dfs = fsspec.filesystem(
        "dicom", fs=target, skip_instance_cache=True, first_request=4096, max_gap=0
    )
    with dfs.open("/threads/failing.dcm") as f, ThreadPoolExecutor(2) as pool:
        first = pool.submit(f.read_frames, [20])  # claims frame 20, then its fetch fails
        assert target.entered.wait(10)
        second = pool.submit(f.read_frames, [20])  # waits for the first thread's fetch
        before = target.requests
        target.go.set()
        with pytest.raises(TransportError) as failed:  # a dropped connection, typed
            first.result(10)
        assert isinstance(failed.value.__cause__, ConnectionResetError)
        assert second.result(10) == [reference_frames(SLIDE)[20]]
        assert target.requests == before + 1  # the waiting thread's own fetch, once


def test_in_flight_claims_are_disjoint_and_released_claims_wake_waiters():
    from hdfsspec.cache.blocks import InFlight

    flight = InFlight()
    mine, others = flight.claim([1, 2, 3])
    assert mine == [1, 2, 3] and others == []
    theirs, waits = flight.claim([3, 4, 2])
    assert theirs == [4] and len(waits) == 1 and not waits[0].is_set()  # one claim: one wait
    flight.release(mine)
    assert waits[0].is_set()
    again, waits = flight.claim([1, 4])
    assert again == [1] and len(waits) == 1 and not waits[0].is_set()  # 4 is still claimed
    flight.release(theirs)
    assert waits[0].is_set()
    twice, waits = flight.claim([7, 7, 8])
    assert twice == [7, 8] and waits == []  # a frame named twice is claimed once


def test_a_claim_wakes_every_thread_waiting_for_it_once_released_in_parts():
    from hdfsspec.cache.blocks import InFlight

    flight = InFlight()
    mine, _ = flight.claim(range(10))
    _, (wait,) = flight.claim([5])
    woken = []
    threads = [threading.Thread(target=lambda: woken.append(wait.wait())) for _ in range(4)]
    for t in threads:
        t.start()
    flight.release(mine[:5])  # the claim's one waiter is set by the first release
    flight.release(mine[5:])  # and setting it again changes nothing
    for t in threads:
        t.join(5)
    assert len(woken) == 4 and wait.is_set()
    wait.wait()  # set: returns at once, now and later
    _, per_frame = flight.claim([20, 21], each=True), flight.claim([20, 21])[1]
    assert len(per_frame) == 2  # a streamed claim: one waiter a frame

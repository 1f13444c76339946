"""Files and images opened before a fork go on in the child (PyTorch / multiprocessing workers).

fsspec's async filesystems refuse to run in a forked child ("not fork-safe"): the
``dicom`` filesystem rebuilds its target there, from its storage options.
"""

from __future__ import annotations

import io
import multiprocessing
import sys
import threading
import time
from typing import Any

import fsspec
import pytest
from conftest import BACKENDS, make_backend

import hdfsspec
from hdfsspec.testing import build_encapsulated, fake_jpeg_frames

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="no fork here",
)
FRAMES = fake_jpeg_frames(60, seed=21, min_size=3000, max_size=4000)
BLOB = build_encapsulated(FRAMES, offset_table="empty")  # the child scans, too


def _run(work: Any, args: tuple[Any, ...], queue: Any) -> None:
    try:
        queue.put(("ok", *work(*args)))
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put(("error", repr(exc), 0))


def _in_child(work: Any, *args: Any) -> tuple[str, Any, int]:
    """``("ok", value, requests)`` of ``work(*args)`` run in a forked child."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(work, args, queue))
    proc.start()
    try:
        return queue.get(timeout=30)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def _read(obj: Any, frames: list[int]) -> tuple[Any, int]:
    if isinstance(obj, hdfsspec.DicomFile):
        return obj.read_frames(frames), obj.stats.requests
    return obj.get_total_pixel_matrix(), obj.file.stats.requests  # decoded in the child


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("name", BACKENDS)
def test_open_file_reads_in_a_forked_child(name, request, tmp_path_factory):
    backend = make_backend(name, request, tmp_path_factory)
    path = backend.put("fork.dcm", BLOB)
    fs = fsspec.filesystem(
        "dicom",
        fs=backend.target,
        skip_instance_cache=True,
        first_request=4096,
        scan_window=16384,
        max_cache_bytes=4096,
    )
    with fs.open(path) as f:
        assert f.read_frames([0]) == [FRAMES[0]]  # the parent scanned only the start
        before = f.stats.requests
        status, got, requests = _in_child(_read, f, [30, 59])
        assert status == "ok", got
        assert got == [FRAMES[30], FRAMES[59]] and requests > before  # fetched in the child
        assert f.read_frames([45]) == [FRAMES[45]]  # the parent goes on too


def _s3_slide(request: Any, tmp_path_factory: Any, table: str) -> tuple[bytes, Any]:
    """A small slide on S3 (moto), its bytes and its file opened through ``dicom``."""
    from hdfsspec.testing import build_slide

    backend = make_backend("s3", request, tmp_path_factory)
    blob = build_slide(64, 96, tile=32, offset_table=table)
    path = backend.put(f"slide-{table}.dcm", blob)
    fs = fsspec.filesystem("dicom", fs=backend.target, skip_instance_cache=True)
    return blob, fs.open(path)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_image_reads_in_a_forked_child(request, tmp_path_factory):
    import highdicom as hd
    import numpy as np

    blob, f = _s3_slide(request, tmp_path_factory, "bot")
    with hdfsspec.imread(f) as im:
        status, got, requests = _in_child(_read, im, [])
    assert status == "ok", got
    expected = hd.imread(io.BytesIO(blob)).get_total_pixel_matrix()
    assert np.array_equal(got, expected) and requests >= 1


def _ahead_result(ahead: Any) -> tuple[Any, int]:
    return ahead.result(), 0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_read_ahead_in_flight_at_the_fork_is_read_again_in_the_child():
    """A read in flight has no thread in the child: it gets None (reads again), not a hang."""
    from hdfsspec.cache.background import Ahead

    release = threading.Event()

    def fetch(start: int, stop: int) -> bytes:
        release.wait(30)
        return bytes(stop - start)

    ahead = Ahead((0, 10), fetch)
    try:
        assert _in_child(_ahead_result, ahead) == ("ok", None, 0)
    finally:
        release.set()
    assert ahead.result() == bytes(10)  # the parent's read completes as before


def test_image_pickles_for_spawn_workers(request, tmp_path_factory):
    """dask and spawn workers get images by pickle: the copy reads its frames itself."""
    import pickle

    import highdicom as hd
    import numpy as np

    blob, f = _s3_slide(request, tmp_path_factory, "empty")
    with hdfsspec.imread(f) as im:
        copy = pickle.loads(pickle.dumps(im))
    with copy:
        got = copy.get_total_pixel_matrix()
        assert copy.file.stats.requests >= 1
    assert np.array_equal(got, hd.imread(io.BytesIO(blob)).get_total_pixel_matrix())


def _read_counted(f: Any, frames: list[int]) -> tuple[Any, tuple[int, int]]:
    return f.read_frames(frames), (f.stats.requests, f.stats.rounds)


def _wait_held(lock: Any) -> None:
    from hdfsspec._fork import held_elsewhere

    for _ in range(500):
        if held_elsewhere(lock):
            return
        time.sleep(0.01)
    raise AssertionError("the reading thread never took the lock")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("table", ["bot", "empty"])
def test_a_read_waiting_inside_the_lock_at_the_fork_does_not_hang_the_child(table):
    """Another thread waits on the network inside the cache's lock (reading the table,
    or scanning) when the process forks: the child's copy of that lock would be held
    forever. The child reads the frames, counting its own requests and rounds."""
    from hdfsspec.testing import RangeHTTPServer, ShapingProxy

    blob = build_encapsulated(FRAMES, offset_table=table)
    with RangeHTTPServer({"f.dcm": blob}) as server, ShapingProxy(server.url(), rtt=1.0) as proxy:
        fs = fsspec.filesystem(
            "dicom",
            target_protocol="http",
            skip_instance_cache=True,
            first_request=256,  # the table too is beyond the first request
            scan_window=16384,
            progress=False,
        )
        with fs.open(proxy.url + "/f.dcm") as f:
            reader = threading.Thread(target=f.read_frames, args=([50],))
            reader.start()
            _wait_held(f.cache.layout.lock)  # the reader's round is in flight
            before = (f.stats.requests, f.stats.rounds)
            proxy.rtt = 0.0  # the child's requests are not slowed
            status, got, (requests, rounds) = _in_child(_read_counted, f, [30, 59])
            reader.join(30)
        assert status == "ok", got
        assert got == [FRAMES[30], FRAMES[59]]
        assert requests > before[0] and rounds > before[1]
    assert not reader.is_alive()


def _blocks_after(blocks: Any) -> tuple[Any, int]:
    blocks.put([(2, (0, b"xyz"))])
    return (blocks.get(1), blocks.get(2)), blocks.nbytes


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_frame_blocks_locked_at_the_fork_start_empty_in_the_child():
    """A thread changing the blocks at the fork may leave them torn: the child drops them."""
    from hdfsspec.cache.blocks import FrameBlocks

    blocks = FrameBlocks(100)
    blocks.put([(1, (0, b"ab"))])
    assert _in_child(_blocks_after, blocks) == ("ok", (((0, b"ab")), (0, b"xyz")), 5)
    release, taken = threading.Event(), threading.Event()

    def hold() -> None:
        with blocks._lock:
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(30)
    try:
        assert _in_child(_blocks_after, blocks) == ("ok", (None, (0, b"xyz")), 3)
    finally:
        release.set()
        holder.join()
    assert blocks.get(1) == (0, b"ab")  # the parent keeps its blocks

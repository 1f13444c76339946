"""Windows of frames read ahead are streamed: a frame is served once its own bytes are in.

Through real servers (moto's S3 read by signed URLs, the HTTP Range server), behind the
shaping proxy with seeded faults: the values, the requests and the bytes on the wire.
A body that fails part way costs one more request, for what it had left only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import fsspec
import pytest
from conftest import BUCKET, _s3_options

import hdfsspec
from hdfsspec import ObjectChangedError
from hdfsspec.cache.blocks import FrameBlocks, InFlight
from hdfsspec.cache.streamed import StreamedBlocks
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.io.stream import StreamRefused, stream_ranges
from hdfsspec.testing import RangeHTTPServer, ShapingProxy, build_encapsulated, fake_jpeg_frames
from hdfsspec.testing.faults import Fault, FaultPlan

FRAMES = fake_jpeg_frames(400, seed=23, min_size=900, max_size=1100)  # about 400 KB
BLOB = build_encapsulated(FRAMES, offset_table="bot")
EOT = build_encapsulated(FRAMES, offset_table="eot")  # every end known: no walk to the last
OTHER = build_encapsulated([bytes(b ^ 0x5A for b in f) for f in FRAMES], offset_table="bot")


@pytest.fixture(scope="module")
def proxy(s3_endpoint) -> Iterator[ShapingProxy]:
    with ShapingProxy(s3_endpoint, lifetime=600) as p:
        yield p


@pytest.fixture
def shaped(proxy) -> Iterator[ShapingProxy]:
    proxy.faults = None
    proxy.log.clear()
    yield proxy
    proxy.faults = None


def _put(s3_endpoint: str, name: str, data: bytes) -> str:
    path = f"{BUCKET}/stream/{name}"
    fsspec.filesystem("s3", **_s3_options(s3_endpoint)).pipe_file(path, data)
    return path


def _dicom(url: str, **options) -> fsspec.AbstractFileSystem:
    options.setdefault("first_request", 16384)  # the first frames: the reads that make
    # the pattern cost nothing
    return fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options=_s3_options(url),
        skip_instance_cache=True,
        index_cache=False,
        **options,
    )


def _loop(f) -> list[int]:
    """Read every frame in order; return the number of requests the file had counted
    when each frame came back (a stream is counted once it has ended)."""
    seen = []
    for k in range(len(FRAMES)):
        assert f.read_frames([k]) == [FRAMES[k]]
        seen.append(f.stats.requests)
    return seen


# -- the transport ---------------------------------------------------------------------------
def _collect(fs, url, ranges, headers=None):
    got: dict[int, list] = {k: [] for k in range(len(ranges))}
    done = threading.Event()
    left = [len(ranges)]

    def sink(k, chunk):
        got[k].append(chunk)
        if not isinstance(chunk, bytes):
            left[0] -= 1
            if left[0] == 0:
                done.set()

    stream_ranges(fs, url, ranges, headers or {}, sink).result(timeout=30)
    assert done.is_set()
    return got


def test_ranges_stream_whole_and_in_order():
    data = bytes(range(256)) * 4096  # 1 MiB
    with RangeHTTPServer({"x.bin": data}) as server, ShapingProxy(server.url()) as proxy:
        http = fsspec.filesystem("http", skip_instance_cache=True)
        ranges = [(0, 10), (5000, 700_000), (900_000, len(data))]
        got = _collect(http, f"{proxy.url}/x.bin", ranges)
        for k, (a, b) in enumerate(ranges):
            *chunks, end = got[k]
            assert end is None and b"".join(chunks) == data[a:b]
        assert len(got[1]) > 2  # the large range came in pieces
        assert proxy.log.requests == 3 and proxy.log.bytes == sum(b - a for a, b in ranges)


def test_an_answer_without_the_range_asked_ends_the_range_with_its_status():
    data = b"x" * 5000
    with RangeHTTPServer({"x.bin": data}) as server:
        http = fsspec.filesystem("http", skip_instance_cache=True)
        url = f"{server.url()}/x.bin"
        got = _collect(http, url, [(0, 100), (10, 20)], {"If-Match": '"not-the-etag"'})
        for k in range(2):
            (error,) = got[k]
            assert isinstance(error, StreamRefused) and error.status == 412


# -- cutting blocks out of the streamed bytes ---------------------------------------------
def test_blocks_are_kept_and_released_as_their_bytes_come_in():
    starts = [100, 200, 300, 400]
    index = FrameIndex(
        size=1000,
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        header_end=100,
        offset_table="bot",
        starts=starts,
        stops=[192, 292, 392, 492],
        pixel_keyword="PixelData",
        encapsulated=True,
    )
    data = bytes(k % 251 for k in range(1000))
    blocks, in_flight = FrameBlocks(10**6), InFlight()
    mine, _ = in_flight.claim([1, 2, 3], each=True)
    cut = StreamedBlocks(index, [(150, 500)], mine, data[:150], blocks, in_flight)
    _, waits = in_flight.claim([1, 2, 3])
    cut.feed(0, 150, data[150:250])  # frame 0's block is not the stream's: only mine and later
    assert 1 not in blocks and not any(w.is_set() for w in waits)
    cut.feed(0, 250, data[250:310])  # frame 1's block (its items and the next item's head)
    assert blocks.get(1) == (200, data[200:300]) and [w.is_set() for w in waits] == [1, 0, 0]
    with pytest.raises(ValueError, match="expected 310"):
        cut.feed(0, 320, b"x")
    cut.feed(0, 310, data[310:420])
    assert [w.is_set() for w in waits] == [1, 1, 0] and 3 not in blocks
    cut.done(RuntimeError("the rest could not be read"))
    assert all(w.is_set() for w in waits) and 3 not in blocks  # its reader fetches it


# -- through S3 ------------------------------------------------------------------------------
def test_a_frame_of_a_window_is_served_while_the_window_still_streams(s3_endpoint, shaped):
    path = _put(s3_endpoint, "stall.dcm", EOT)  # one window, the only request after the open
    shaped.faults = FaultPlan(1, stall=Fault(1.0, limit=1, after=1), stall_seconds=1.5)
    with _dicom(shaped.url).open(path) as f:
        before = f.stats.requests
        seen = _loop(f)
        held = sum(stop + 8 <= len(f.header.prefix) for stop in f.index.stops)
        # frames beyond the first request's bytes, returned before any window had ended
        early = [k for k, n in enumerate(seen) if n == before and k >= held]
        assert shaped.log.faults == {"stall": 1}
        assert early  # served from the part that came before the stall
    assert shaped.log.requests == 2 and shaped.log.bytes <= 1.05 * len(EOT)


@pytest.mark.parametrize("kind", ["reset", "short", "truncate"])
def test_a_stream_cut_part_way_reads_only_what_it_left(s3_endpoint, shaped, kind):
    path = _put(s3_endpoint, f"cut-{kind}.dcm", BLOB)
    shaped.faults = FaultPlan(2, **{kind: Fault(1.0, limit=1, after=1)})  # the first window
    with _dicom(shaped.url).open(path) as f:
        _loop(f)
        requests = f.stats.requests
    assert shaped.log.faults == {kind: 1}
    # the stream and its rest are counted, and nothing else went on the wire
    assert shaped.log.requests == requests
    # the rest starts where the bytes received end, never again at the window's start
    starts = [entry[2] for entry in shaped.log.entries]
    assert len(set(starts)) == len(starts)
    if kind != "reset":  # (a reset may lose bytes the proxy had sent: read again)
        assert shaped.log.bytes <= 1.05 * len(BLOB)


def test_a_replaced_object_is_never_served_from_a_stream(s3_endpoint, shaped):
    path = _put(s3_endpoint, "replaced.dcm", BLOB)
    with _dicom(shaped.url).open(path) as f:
        assert f.read_frames([0]) == [FRAMES[0]]  # the open, and the first request's frames
        _put(s3_endpoint, "replaced.dcm", OTHER)  # the same size and layout
        with pytest.raises(ObjectChangedError):
            _loop(f)


def test_highdicom_loop_streams_over_s3(s3_endpoint, shaped):
    path = _put(s3_endpoint, "loop.dcm", BLOB)
    options = {"s3": _s3_options(shaped.url), "index_cache": False, "first_request": 4096}
    with hdfsspec.imread(f"s3://{path}", storage_options=options) as im:
        shaped.log.clear()
        for k in range(1, len(FRAMES) + 1):
            assert im.get_raw_frame(k) == FRAMES[k - 1]
    assert shaped.log.requests <= 8  # windows growing x4, each one request
    assert shaped.log.bytes <= 1.05 * len(BLOB)


def test_closing_a_file_ends_its_streams(s3_endpoint, shaped):
    path = _put(s3_endpoint, "closed.dcm", EOT)
    shaped.faults = FaultPlan(3, stall=Fault(1.0, limit=1, after=1), stall_seconds=3.0)
    f = _dicom(shaped.url).open(path)
    for k in range(20):  # the window is asked for, and stalls
        assert f.read_frames([k]) == [FRAMES[k]]
    requests = f.cache.requests
    f.close()  # at once, not after the stall; and what the stream left is not read again
    time.sleep(3.5)
    assert shaped.log.requests == 2 and shaped.log.faults == {"stall": 1}
    assert requests.requested < len(EOT)  # what came before the stall, no more


def test_only_targets_that_stream_are_asked_to(s3_endpoint, tmp_path):
    """A window of a target that reads only whole ranges claims its frames once, not
    one waiter each (and is not offered to a stream that would refuse it)."""
    local = tmp_path / "x.dcm"
    local.write_bytes(BLOB)
    with fsspec.open(f"dicom::file://{local}", dicom={"index_cache": False}) as f:
        assert not f.cache.requests.can_stream
        assert _loop(f) and f.stats.requests <= 8 and f.stats.bytes <= 1.05 * len(BLOB)
    path = _put(s3_endpoint, "can.dcm", BLOB)
    with _dicom(s3_endpoint).open(path) as f:  # S3 through signed URLs
        assert f.cache.requests.can_stream


# -- a pass over every frame of an object without offset table -----------------------------
def test_every_frame_pass_yields_frames_while_the_walk_goes_on(s3_endpoint, shaped):
    """Without offset table, the frames the walk has found are yielded at once, not
    held back until it is several batches further (here: beyond a stalled window)."""
    blob = build_encapsulated(FRAMES, offset_table="empty")
    path = _put(s3_endpoint, "walk.dcm", blob)
    shaped.faults = FaultPlan(4, stall=Fault(1.0, limit=1, after=3), stall_seconds=1.5)
    with _dicom(shaped.url, scan_window=32768, scan_concurrency=1).open(path) as f:
        began, when = time.monotonic(), []
        for k, data in f.iter_frames(batch_bytes=16384, ahead=4):
            assert data == FRAMES[k]
            when.append(time.monotonic() - began)
    assert len(when) == len(FRAMES) and shaped.log.faults == {"stall": 1}
    assert when[-1] >= 1.5  # the stalled window held the rest back
    early = sum(t < 1.0 for t in when)
    assert early > 16384 // 1100 + 32768 // 900  # beyond the first request and a window
    assert shaped.log.bytes <= 1.05 * len(blob)
    # the first request, then the walk's windows back to back: none read twice
    assert shaped.log.requests <= 1 + -(-(len(blob) - 16384) // 32768)

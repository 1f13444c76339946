"""A DicomFile behaves as a plain binary file, whatever frame reads come in between.

Any sequence of seek / read / readinto / tell, interleaved with ``read_frames``,
``iter_frames`` and ``prefetch``, gives the bytes :class:`io.BytesIO` gives (a seek
before the start is refused, as on disk) and the exact encoded frames. Every byte on
the wire is counted, no request reaches past the object, a byte read fetches little
beyond its end, and the whole object is fetched at most about twice.
"""

from __future__ import annotations

import io
import struct

import fsspec
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hdfsspec._types import DEFAULT_OPTIONS
from hdfsspec.dicom.parse import parse_header
from hdfsspec.io.link import WHOLE_FRACTION
from hdfsspec.testing import (
    CountingFileSystem,
    build_encapsulated,
    build_native,
    fake_jpeg_frames,
)

SHORT = fake_jpeg_frames(40, seed=5, min_size=200, max_size=900)
PADDING = struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, 64) + bytes(64)  # after Pixel Data
NATIVE = np.random.default_rng(7).integers(0, 65535, (30, 12, 10), dtype=np.uint16)
LONG = fake_jpeg_frames(120, seed=6, min_size=200, max_size=900)
LAYOUTS = {  # name: (frames, object)
    "bot": (SHORT, build_encapsulated(SHORT, offset_table="bot")),
    # a first request that holds most of a table's entries: the rest is read only
    # when a frame or a byte read needs it
    "bot-long": (LONG, build_encapsulated(LONG, offset_table="bot")),
    "eot": (SHORT, build_encapsulated(SHORT, offset_table="eot")),
    "empty": (SHORT, build_encapsulated(SHORT, offset_table="empty")),
    "empty-fragmented": (
        SHORT,
        build_encapsulated(SHORT, offset_table="empty", fragments_per_frame=3),
    ),
    "native": ([f.tobytes() for f in NATIVE], build_native(NATIVE, trailing=PADDING)),
}
WINDOW = 2048
HEADER_END = {
    name: parse_header(lambda a, b, blob=blob: blob[a:b], len(blob)).header_end
    for name, (_, blob) in LAYOUTS.items()
}


def _slack(layout: str, first_request: int) -> int:
    """Bytes a read may fetch beyond its end: the header, a frame block, a scan round.

    Without offset table a walk driven by a byte read fetches a full round of
    windows ahead (a reader walking the items one by one would otherwise make many
    small requests).
    """
    frames = LAYOUTS[layout][0]
    scan = (DEFAULT_OPTIONS.scan_concurrency + 1) * WINDOW if "empty" in layout else 0
    return HEADER_END[layout] + first_request + scan + 2 * max(map(len, frames)) + 8 * len(frames)


frame_lists = st.lists(st.integers(0, 10_000), min_size=1, max_size=6)  # modulo the count
ops = st.one_of(
    st.tuples(st.just("seek"), st.integers(-50, 90_000), st.sampled_from([0, 1, 2])),
    st.tuples(st.just("read"), st.integers(-1, 5000)),
    st.tuples(st.just("readinto"), st.integers(0, 3000)),
    st.tuples(st.just("tell")),
    st.tuples(st.just("frames"), frame_lists),
    st.tuples(st.just("iter"), st.integers(0, 10_000), st.integers(1, 8)),
    st.tuples(st.just("prefetch"), frame_lists),
)


def _outcome(call, *args) -> tuple:
    try:
        return ("ok", call(*args))
    except (ValueError, OSError) as exc:  # io refuses a negative absolute position
        return ("refused", type(exc).__name__)


def _apply(
    op: tuple, f, ref: io.BytesIO, counting: CountingFileSystem, frames: list, slack: int
) -> None:
    kind = op[0]
    if kind == "seek":
        offset, whence = op[1], op[2]
        target = {0: offset, 1: ref.tell() + offset, 2: len(ref.getvalue()) + offset}[whence]
        # refused before the start, as by a file on disk (io.BytesIO moves to 0 instead)
        expected = ("refused", "ValueError") if target < 0 else _outcome(ref.seek, offset, whence)
        assert _outcome(f.seek, offset, whence) == expected
    elif kind in ("read", "readinto"):
        before, end = counting.bytes, len(ref.getvalue())
        reach = min(end, ref.tell() + (end if op[1] < 0 else op[1]))  # where the read ends
        if kind == "read":
            assert f.read(op[1]) == ref.read(op[1])
        else:
            a, b = bytearray(op[1]), bytearray(op[1])
            assert f.readinto(a) == ref.readinto(b) and a == b
        # a read fetches no further than it reads, but for the header, the frame block
        # it ends in, a scan window, and the whole Pixel Data once it covers 3/4 of it
        assert counting.bytes - before <= reach / WHOLE_FRACTION + slack
    elif kind == "tell":
        assert f.tell() == ref.tell()
    elif kind == "frames":
        wanted = [i % len(frames) for i in op[1]]
        assert f.read_frames(wanted) == [frames[i] for i in wanted]
    elif kind == "iter":
        first = op[1] % len(frames)
        wanted = list(range(first, min(len(frames), first + op[2])))
        assert [(i, b) for i, b in f.iter_frames(wanted)] == [(i, frames[i]) for i in wanted]
    else:
        f.prefetch([i % len(frames) for i in op[1]])
    assert f.tell() == ref.tell()  # frame reads never move the file position


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(sorted(LAYOUTS)),
    program=st.lists(ops, min_size=1, max_size=12),
    first_request=st.sampled_from([256, 4096, 65536]),
    bound=st.sampled_from([1, 3000, 256 * 2**20]),
)
@example(  # a read ending in the part of the BOT the header bytes did not hold
    layout="bot", program=[("read", 1045)], first_request=256, bound=256 * 2**20
)
def test_byte_and_frame_reads_in_any_order(layout, program, first_request, bound):
    frames, blob = LAYOUTS[layout]
    memory = fsspec.filesystem("memory")
    memory.pipe_file(f"/ops/{layout}.dcm", blob)
    counting = CountingFileSystem(fs=memory)
    fs = fsspec.filesystem(
        "dicom",
        fs=counting,
        skip_instance_cache=True,
        first_request=first_request,
        max_cache_bytes=bound,
        scan_window=WINDOW,
        index_cache=False,
        progress=False,
        rtt=0.0,  # bytes cost everything: the cost model bridges no gap, reads nothing whole
        bandwidth=1e3,
        readahead=False,  # each read's bytes are checked alone (tests/test_readahead.py)
    )
    ref = io.BytesIO(blob)
    with fs.open(f"/ops/{layout}.dcm") as f:
        for op in program:
            _apply(op, f, ref, counting, frames, _slack(layout, first_request))
        stats = f.stats
        assert stats.requests == counting.requests
        assert stats.bytes == counting.bytes
    for _, start, stop in counting.ranges:
        assert start is None or 0 <= start <= len(blob)
        assert stop is None or stop <= len(blob)
    if bound > len(blob):  # the cache holds the whole object, and no gap is bridged: a
        # byte is fetched once, or twice when a plan reads the whole Pixel Data
        assert counting.bytes <= 2 * len(blob) + _slack(layout, first_request)

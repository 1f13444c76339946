"""The frame-aware cache: reads equal the blob slice; bounded memory; threads; changed objects."""

from __future__ import annotations

import io
import threading

import fsspec
import pytest
from conftest import CORPUS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import reference_frames

from hdfsspec import DicomFrameCache, ObjectChangedError
from hdfsspec.testing import CountingFileSystem, build_encapsulated, fake_jpeg_frames

NAMES = sorted(CORPUS)
BIG = build_encapsulated(
    fake_jpeg_frames(200, seed=5, min_size=500, max_size=900), offset_table="empty"
)


def make_cache(blob: bytes, **options):
    log: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> bytes:
        log.append((a, b))
        return blob[a:b]

    cache = DicomFrameCache(
        0,
        fetch,
        len(blob),
        path="mem://blob",
        fetch_ranges=lambda r: [fetch(a, b) for a, b in r],
        **options,
    )
    return cache, log


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(NAMES),
    reads=st.lists(st.tuples(st.integers(-10, 5000), st.integers(0, 3000)), max_size=8),
    first_request=st.sampled_from([256, 1024, 65536]),
)
def test_any_read_equals_blob_slice(name, reads, first_request):
    blob = CORPUS[name]
    cache, log = make_cache(blob, first_request=first_request, max_cache_bytes=2048)
    for start, length in reads:
        expected = blob[max(0, start) : max(0, start + length)]
        assert cache._fetch(start, start + length) == expected
    assert cache._fetch(None, None) == blob
    assert cache.stats.requests == len(log)
    assert cache.stats.bytes == sum(b - a for a, b in log)


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.integers(0, 199), min_size=1, max_size=30), bound=st.integers(1, 40_000))
def test_lru_bound_and_values(frames, bound):
    cache, _ = make_cache(BIG, max_cache_bytes=bound, first_request=1024, scan_window=4096)
    ref = reference_frames(BIG)
    assert cache.read_frames(frames) == [ref[f] for f in frames]
    assert cache.frames.blocks.nbytes <= bound
    assert sum(len(d) for _, d in cache.frames.blocks.values()) == cache.frames.blocks.nbytes


def test_one_frame_read_fetches_exactly_its_block():
    blob = CORPUS["eot.dcm"]
    cache, log = make_cache(blob, first_request=512)
    assert cache.index.number_of_frames == 12
    n = len(log)
    start, stop = cache.index.frame_range(7)
    cache._fetch(start + 3, start + 9)  # a small read inside frame 7
    assert log[n:] == [(start, stop + 8)]
    assert cache._fetch(stop, stop + 8) == blob[stop : stop + 8]  # next item header: a hit
    assert len(log) == n + 1


@pytest.mark.parametrize("first_request", [512, 65536])
def test_last_frame_end_found_in_the_same_round_as_the_other_frames(first_request):
    """A Basic Offset Table has no end for the last frame: its items are walked.

    Read with other frames, the walk's first bytes come in the same round as theirs
    (one round, not two), and the last frame is fetched once.
    """
    frames = fake_jpeg_frames(12, seed=4, min_size=2000, max_size=3000)
    blob = build_encapsulated(frames, offset_table="bot")
    cache, log = make_cache(blob, first_request=first_request, max_gap=0)
    assert cache.index.number_of_frames == 12 and cache.index.stops[-1] == -1
    n, rounds = len(log), cache.stats.rounds
    assert cache.read_frames([2, 11]) == [frames[2], frames[11]]
    assert cache.stats.rounds == rounds + (first_request == 512)  # all held: no round
    new = log[n:]
    last_start = cache.index.frame_range(11)[0]
    assert len(new) == (2 if first_request == 512 else 0)
    if new:  # frame 2's items and the next item header; the walk from the last frame's start
        assert sum(b - a for a, b in new) == len(frames[2]) + 16 + (len(blob) - last_start)
    assert cache.read_frames([11, 10]) == [frames[11], frames[10]]  # 11 is held now
    assert [a for a, _ in log[n:]].count(last_start) == (first_request == 512)


def test_plan_is_a_dry_run():
    cache, log = make_cache(CORPUS["eot.dcm"], first_request=512, max_gap=0)
    index = cache.index
    held = len(cache.parsed.prefix)
    assert held < index.frame_range(3)[0]
    n = len(log)
    plan = cache.plan([3, 4, 5, 9])
    assert len(log) == n
    assert plan.frames == (3, 4, 5, 9)
    assert plan.ranges == (
        (index.frame_range(3)[0], index.frame_range(5)[1] + 8),
        (index.frame_range(9)[0], index.frame_range(9)[1] + 8),
    )
    assert plan.nbytes == sum(b - a for a, b in plan.ranges)
    assert make_cache(CORPUS["eot.dcm"], first_request=512)[0].plan([3, 4, 5, 9]).requests == 1
    cache.prefetch([3, 4, 5, 9])
    assert len(log) == n + 2
    assert cache.plan([3, 4, 5, 9]).requests == 0


def test_threads_share_one_file():
    target = fsspec.filesystem("memory")
    target.pipe("/threads.dcm", BIG)
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem("dicom", fs=counting, skip_instance_cache=True, scan_window=4096)
    ref = reference_frames(BIG)
    errors: list[BaseException] = []
    with fs.open("/threads.dcm") as f:

        def work(k: int) -> None:
            try:
                for i in range(k, 200, 7):
                    assert f.read_frames([i, (i * 13) % 200]) == [ref[i], ref[(i * 13) % 200]]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert f.stats.phases["header"].requests == 1
        assert counting.bytes <= 3 * len(BIG)


def test_object_replaced_by_a_shorter_one_while_open():
    target = fsspec.filesystem("memory")
    target.pipe("/replaced.dcm", BIG)
    fs = fsspec.filesystem(
        "dicom", fs=target, skip_instance_cache=True, first_request=1024, max_cache_bytes=1
    )
    with fs.open("/replaced.dcm") as f:
        f.read_frames([10])
        target.pipe("/replaced.dcm", BIG[: len(BIG) // 2])
        with pytest.raises(ObjectChangedError) as err:
            f.read_frames([190])
        assert err.value.path == "memory:///replaced.dcm" and err.value.offset is not None


def test_error_pickles_with_its_fields():
    import pickle

    err = ObjectChangedError("changed", path="s3://b/k", offset=12, tag=0x7FE00010)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.offset, again.tag) == ("s3://b/k", 12, 0x7FE00010)
    assert str(again) == "s3://b/k: changed [byte 12, tag (7FE0,0010)]"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("first_request", [256, 65536])
def test_frame_numbers_outside_the_object_raise_index_error_and_fetch_nothing(name, first_request):
    """Checked against Number of Frames, cold: before, -1 gave the last frame found so
    far (frame 0 of a partial scan), or the last frame by numpy's wraparound."""
    cache, log = make_cache(CORPUS[name], first_request=first_request)
    cache._fetch(0, 16)  # the header: the number of frames is known, no index yet
    n, total = len(log), len(reference_frames(CORPUS[name]))
    for frames in ([-1], [0, -2], [total], [total + 5, 0]):
        with pytest.raises(IndexError, match="out of range"):
            cache.read_frames(frames)
        with pytest.raises(IndexError, match="out of range"):
            cache.prefetch(frames)
        with pytest.raises(IndexError, match="out of range"):
            cache.plan(frames)
    assert len(log) == n
    assert cache.read_frames([total - 1]) == reference_frames(CORPUS[name])[-1:]


def _with_eot_length(blob: bytes, frame: int, value: int) -> bytes:
    """The object with entry ``frame`` of its Extended Offset Table Lengths set to ``value``."""
    import struct

    tag = blob.index(b"\xe0\x7f\x02\x00OV")  # (7FE0,0002), explicit VR: tag, VR, 2, length
    (length,) = struct.unpack_from("<L", blob, tag + 8)
    lengths = list(struct.unpack_from(f"<{length // 8}Q", blob, tag + 12))
    lengths[frame] = value
    return (
        blob[: tag + 12] + struct.pack(f"<{len(lengths)}Q", *lengths) + blob[tag + 12 + length :]
    )


@pytest.mark.parametrize("damage", ["short-40", "short-100", "zero", "2**63", "2**64-8"])
@pytest.mark.parametrize("first_request", [256, 1024, 65536])
def test_damaged_eot_lengths_give_exact_bytes_and_a_typed_error_for_frames(damage, first_request):
    """A Lengths entry that leaves a gap before the next frame, or is 0, or wraps negative
    as int64: byte reads stay exact (before: wrong bytes in the gap, or a read that never
    returned); the frame is an OffsetTableError (before: b"" for a negative length)."""
    from hdfsspec import OffsetTableError

    blob = CORPUS["eot.dcm"]
    true = reference_frames(blob)[2]
    value = {"short-40": len(true) - 40, "short-100": len(true) - 100, "zero": 0}.get(
        damage, 2**63 if damage == "2**63" else 2**64 - 8
    )
    bad = _with_eot_length(blob, 2, value)
    cache, log = make_cache(bad, first_request=first_request)
    assert cache._fetch(0, len(bad)) == bad
    for start in range(0, len(bad), 97):
        assert cache._fetch(start, start + 300) == bad[start : start + 300]
    assert sum(b - a for a, b in log) <= 40 * len(bad)
    with pytest.raises(OffsetTableError) as err:
        cache.read_frames([2])
    assert err.value.tag in (0x7FE00002, 0x7FE00010) and 0 <= err.value.offset < len(bad)
    if damage.startswith("2**"):  # a length beyond the object: the table is refused
        with pytest.raises(OffsetTableError, match="end of the object"):
            cache.read_frames([0])
    else:  # the other frames are read
        assert cache.read_frames([0, 5]) == [reference_frames(blob)[i] for i in (0, 5)]


def test_odd_eot_lengths_of_padded_items_give_the_frames_pydicom_reads():
    """Extended Offset Table Lengths may give a frame's odd length, its item padded to
    even: the frames are the lengths the table gives (pydicom's reading), in the same
    requests as even ones (before: an OffsetTableError for every such frame)."""
    import pydicom
    from pydicom.encaps import generate_frames

    frames = fake_jpeg_frames(9, seed=3)
    odd = [f[:-3] + b"\xff\xd9" if i % 3 else f for i, f in enumerate(frames)]
    assert all(len(f) % 2 == (1 if i % 3 else 0) for i, f in enumerate(odd))
    blob = build_encapsulated(odd, offset_table="eot")  # pydicom pads the odd items
    for i, f in enumerate(odd):
        blob = _with_eot_length(blob, i, len(f))
    ds = pydicom.dcmread(io.BytesIO(blob))
    table = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    expected = list(generate_frames(ds.PixelData, extended_offsets=table))
    assert expected == odd
    cache, log = make_cache(blob, first_request=len(blob) // 2)
    assert cache.read_frames(range(9)) == odd
    assert cache.stats.requests == len(log) == 2  # the header, then the frames in one range
    half, last = len(blob) // 2, int(cache.index.stops[-1])
    assert last == len(blob) - 9  # the odd last frame: its padding, then the delimiter
    assert log == [(0, half), (half, last + 8)]  # each block holds the next item's header
    assert cache.read_frames([4]) == [odd[4]] and len(log) == 2


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=40))
def test_distinct_frames_is_sorted_unique(frames):
    import numpy as np

    from hdfsspec.io.planning import distinct_frames

    got = distinct_frames(frames)
    assert got.dtype == np.int64
    assert got.tolist() == sorted(set(frames))


def test_first_frame_read_does_not_import_numpy_ma():
    """numpy.ma costs 10-80 ms to import; reading frames must not pull it in."""
    import subprocess
    import sys

    eager = subprocess.run(
        [sys.executable, "-c", "import sys, numpy; print('numpy.ma' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    if eager.stdout.strip() == "True":
        pytest.skip("this numpy (1.x) imports numpy.ma with numpy itself")
    code = (
        "import sys, fsspec, hdfsspec\n"
        "from hdfsspec.testing import build_encapsulated, fake_jpeg_frames\n"
        "blob = build_encapsulated(fake_jpeg_frames(4, seed=1), offset_table='bot')\n"
        "fsspec.filesystem('memory').pipe('/ma.dcm', blob)\n"
        "with fsspec.open('dicom::memory://ma.dcm', index_cache=False) as f:\n"
        "    frames = f.read_frames([2, 0, 2])\n"
        "    ok = frames[0] == frames[2] != frames[1]\n"
        "    print(ok, f.stats.requests, f.stats.bytes == len(blob), 'numpy.ma' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # a small object: the open's one request holds it all
    assert out.stdout.split() == ["True", "1", "True", "False"]

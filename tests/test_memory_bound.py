"""``max_cache_bytes`` bounds what the cache holds: frame blocks, a walk's windows and the
rounds it keeps, and the batches a sequential reader has in flight, together.

(Resident memory itself is measured in ``benchmarks/``: peak growth while reading every
frame under a 32 MiB bound, with and without an offset table.)
"""

from __future__ import annotations

import fsspec
import pytest

from hdfsspec import ReadOptions
from hdfsspec.cache.blocks import FrameBlocks
from hdfsspec.cache.walk import walk_options
from hdfsspec.testing import CountingFileSystem, build_encapsulated, fake_jpeg_frames

MiB = 2**20
FRAMES = fake_jpeg_frames(3000, seed=21, min_size=1500, max_size=2500)  # about 6 MB


def test_reservations_evict_blocks_and_limit_what_is_kept():
    blocks = FrameBlocks(1000)
    blocks.put([(k, (k * 100, b"x" * 100)) for k in range(10)])
    assert blocks.nbytes == 1000
    blocks.reserve(600)
    assert blocks.nbytes == 400 and 9 in blocks and 0 not in blocks  # least recent out
    blocks.put([(20, (0, b"y" * 300))])
    assert blocks.nbytes + blocks.reserved <= 1000
    blocks.reserve(2000)  # more than the bound: nothing kept, nothing raised
    blocks.put([(21, (0, b"z" * 10))])
    assert blocks.nbytes == 0
    blocks.release(2600)
    blocks.release(50)  # never below zero
    assert blocks.reserved == 0
    blocks.put([(22, (0, b"w" * 900))])
    assert blocks.nbytes == 900


@pytest.mark.parametrize(
    ("bound", "window", "concurrency", "run"),
    [
        (256 * MiB, 8 * MiB, 4, 64 * MiB),  # the defaults: windows as they were
        (32 * MiB, (8 * MiB) // 5, 4, 8 * MiB),  # a quarter of the bound over 5 windows
        (4 * MiB, 256 * 1024, 3, MiB),  # the floor of a window, then fewer in flight
        (MiB, 256 * 1024, 1, 512 * 1024),
    ],
)
def test_walk_windows_fit_a_quarter_of_the_bound(bound, window, concurrency, run):
    options, run_bound = walk_options(ReadOptions(max_cache_bytes=bound))
    assert (options.scan_window, options.scan_concurrency) == (window, concurrency)
    assert run_bound == run and options.max_cache_bytes == bound
    assert (concurrency + 1) * window <= max(bound // 4, 2 * 256 * 1024)


def _open(blob: bytes, bound: int):
    target = fsspec.filesystem("memory")
    target.pipe("/bound/slide.dcm", blob)
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem(
        "dicom",
        fs=counting,
        skip_instance_cache=True,
        index_cache=False,
        first_request=4096,
        max_cache_bytes=bound,
    )
    return fs.open("/bound/slide.dcm"), counting


@pytest.mark.parametrize("table", ["bot", "empty"])
def test_a_sequential_pass_stays_within_the_bound_and_reads_the_object_once(table):
    blob = build_encapsulated(FRAMES, offset_table=table)
    bound = 4 * MiB  # two thirds of the object (under ~4 MiB the floor of the walk's
    # windows leaves too little room for the frames it fetches ahead of the pass)
    f, counting = _open(blob, bound)
    with f:
        blocks = f.cache.frames.blocks
        seen = 0
        for k, (frame, data) in enumerate(f.iter_frames()):
            assert frame == k and data == FRAMES[k]
            # blocks and reservations (batches in flight, a walk's windows and rounds)
            assert blocks.nbytes + min(blocks.reserved, bound) <= bound
            assert blocks.reserved > 0
            seen += 1
        assert seen == len(FRAMES)
        assert blocks.reserved == 0  # released when the pass ends, the walk's too
        assert blocks.nbytes <= bound
        # the walk's rounds become the frames the pass reads: the object about once (under
        # so small a bound a few frames the walk kept may be evicted before the pass's
        # threads reach them, and are read again: 1.07 x seen once in CI-like load)
        assert counting.bytes <= 1.15 * len(blob) + 4096
        assert counting.requests <= 2 + len(blob) // (64 * 1024)


def test_a_walk_counts_its_windows_against_the_bound_until_it_ends():
    blob = build_encapsulated(FRAMES, offset_table="empty")
    f, counting = _open(blob, 2 * MiB)
    with f:
        assert f.read_frames([100]) == [FRAMES[100]]
        scan = f.cache.layout.scan
        assert scan is not None  # a partial walk, under way
        window = scan.options.scan_window
        assert window == 256 * 1024  # the floor: a quarter of 2 MiB over 5 windows is less
        assert scan.options.scan_concurrency == 1
        run = sum(len(d) for _, d in scan._run)  # the rounds held to cut frames from
        assert f.cache.frames.blocks.reserved == 2 * window + run
        assert run <= 512 * 1024
        assert f.index.number_of_frames == len(FRAMES)  # the walk ends
        assert f.cache.layout.scan is None and f.cache.frames.blocks.reserved == 0
        assert counting.bytes <= len(blob) + 4 * window

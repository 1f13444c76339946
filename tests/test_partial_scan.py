"""Without offset table, the items are walked only as far as the frames asked for."""

from __future__ import annotations

import itertools

import fsspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import reference_frames

from hdfsspec import FrameIndexError, ReadOptions
from hdfsspec.testing import CountingFileSystem, build_encapsulated, fake_jpeg_frames

FRAMES = fake_jpeg_frames(2000, seed=4, min_size=900, max_size=1100)
BLOB = build_encapsulated(FRAMES, offset_table="empty")
WINDOW = 16 * 1024


def open_counted(blob: bytes, name: str, **options):
    target = fsspec.filesystem("memory")
    target.pipe(f"/partial/{name}", blob)
    counting = CountingFileSystem(fs=target)
    options = {"first_request": 4096, "scan_window": WINDOW, "scan_concurrency": 2, **options}
    fs = fsspec.filesystem(
        "dicom", fs=counting, skip_instance_cache=True, index_cache=False, **options
    )
    return fs.open(f"/partial/{name}"), counting


def test_bytes_grow_with_the_frame_asked_for():
    f, counting = open_counted(BLOB, "a.dcm")
    with f:
        assert f.read_frames([10]) == [FRAMES[10]]
        early = counting.bytes
        assert early <= 4096 + 2 * WINDOW + 2000  # the header, one round, the frame
        assert f.cache.layout._index is None  # the walk stopped early
        assert f.read_frames([600]) == [FRAMES[600]]
        middle = counting.bytes
        assert middle < len(BLOB) * 0.45
        assert f.index.number_of_frames == 2000  # the complete index walks to the end
        assert f.index.offset_table == "scan"
        assert counting.bytes <= len(BLOB) + 3 * WINDOW
        assert f.read_frames([1999, 0]) == [FRAMES[1999], FRAMES[0]]


def test_region_of_a_slide_without_offset_table_reads_a_fraction():
    from test_backends import REGION, TILES
    from test_highdicom import local

    import hdfsspec
    from hdfsspec.testing import build_slide

    slide = build_slide(1024, 1024, tile=64, tiles=TILES, offset_table="empty")  # 256 tiles
    f, counting = open_counted(slide, "slide.dcm")
    with hdfsspec.imread(f) as im:
        region = im.get_total_pixel_matrix(**REGION)  # tiles of rows 1-3: the first 64
    assert counting.bytes < len(slide) / 2
    import numpy as np

    assert np.array_equal(region, local(slide).get_total_pixel_matrix(**REGION))


@settings(max_examples=25, deadline=None)
@given(reads=st.lists(st.lists(st.integers(0, 1999), min_size=1, max_size=5), max_size=6))
def test_any_order_of_reads_gives_the_right_frames(reads):
    f, counting = open_counted(BLOB, "h.dcm")
    with f:
        for batch in reads:
            assert f.read_frames(batch) == [FRAMES[i] for i in batch]
        f.seek(0)
        assert f.read() == BLOB
    assert counting.bytes <= 2 * len(BLOB)


def test_fragmented_frames_found_on_markers_while_walking():
    frames = fake_jpeg_frames(300, seed=6, min_size=700, max_size=900)
    blob = build_encapsulated(frames, offset_table="empty", fragments_per_frame=3)
    f, counting = open_counted(blob, "frag.dcm")
    with f:
        assert f.read_frames([5, 7]) == [frames[5], frames[7]]
        assert counting.bytes < len(blob) / 4
        assert f.read_frames(list(range(300))) == reference_frames(blob)


def _declare(blob: bytes, built: int, frames: int) -> bytes:
    """``blob`` with its Number of Frames (``built``, as written) changed to ``frames``."""
    old, new = (f"{n:<2d}".encode() for n in (built, frames))
    assert len(old) == len(new) == 2
    return blob.replace(b"\x28\x00\x08\x00IS\x02\x00" + old, b"\x28\x00\x08\x00IS\x02\x00" + new)


def test_grouping_that_changes_at_the_end_is_an_error():
    # 4 frames declared, 4 fragments, of which 2 start with a JPEG marker after an end
    # marker: while walking, fragments 0-1 look like frame 0; at the end, 4 fragments
    # for 4 frames would be 1:1, but two of them are continuations (no start marker):
    # the grouping is refused before it is compared with what was served.
    marked, plain = b"\xff\xd8" + b"\x11" * 40_000, b"\x22" * 40_000 + b"\xff\xd9"
    blob = _declare(
        build_encapsulated(
            [marked + plain, marked + plain], offset_table="empty", fragments_per_frame=2
        ),
        2,
        4,
    )
    f, _ = open_counted(blob, "bad.dcm", max_gap=0)
    with f:
        assert f.read_frames([0]) == [marked + plain]
        assert f.cache.layout._index is None  # served while walking
        with pytest.raises(FrameIndexError, match="cannot split 4 fragments into 4 frames"):
            f.index  # noqa: B018


def test_a_continuation_fragment_with_a_start_marker_is_not_taken_for_a_frame():
    """Frame 7's second fragment begins with FFD8 (an embedded thumbnail, a split at a
    marker): the fragment before it does not end with FFD9, so the walk stops grouping
    while partial, and at the end groups on the markers that follow an end marker.
    Before, frame 7 came back as its first fragment alone and every later frame was the
    one before it, until the walk reached the end and raised."""
    halves = []
    for k, frame in enumerate(fake_jpeg_frames(20, seed=8, min_size=900, max_size=1100)):
        cut = len(frame) // 2 // 2 * 2
        first, second = frame[:cut], frame[cut:]
        if k == 7:
            second = b"\xff\xd8" + second[2:]
        halves += [first, second]
    truth = [a + b for a, b in zip(halves[::2], halves[1::2], strict=True)]
    blob = _declare(build_encapsulated(halves, offset_table="empty"), 40, 20)
    f, counting = open_counted(blob, "thumb.dcm")
    with f:
        assert f.read_frames([3]) == [truth[3]]  # before frame 7: found while walking
        assert f.read_frames([10]) == [truth[10]]
        assert f.index.offset_table == "scan"
        assert f.read_frames(list(range(20))) == truth
    assert counting.bytes <= 2 * len(blob)


def test_a_frame_without_start_marker_stops_the_partial_grouping():
    """One fragment a frame, but frame 150 does not begin with FFD8 (a boxed JPEG 2000
    frame, say): taken for a continuation of frame 149 while walking, every later frame
    would be served as the one after it. The end marker before it says otherwise."""
    frames = fake_jpeg_frames(300, seed=9, min_size=900, max_size=1100)
    frames[150] = b"\x00\x00\x00\x0cjP  " + frames[150][10:]
    blob = build_encapsulated(frames, offset_table="empty")
    f, counting = open_counted(blob, "boxed.dcm")
    with f:
        assert f.read_frames([10]) == [frames[10]]
        early = counting.bytes
        assert early < len(blob) / 4 and f.cache.layout._index is None
        assert f.read_frames([200, 149]) == [frames[200], frames[149]]
        assert f.index.number_of_frames == 300  # walked to the end, then grouped 1:1
    assert counting.bytes <= len(blob) + 3 * WINDOW


def test_end_markers_of_fragments_larger_than_a_window_are_fetched():
    """The walk skips the bodies of fragments larger than a window; each window starts
    with the last bytes of the fragment before its item, so the end marker is seen
    and frames are still served while walking."""
    frames = fake_jpeg_frames(60, seed=10, min_size=40_000, max_size=44_000)
    blob = build_encapsulated(frames, offset_table="empty")
    f, counting = open_counted(blob, "large.dcm")
    with f:
        assert f.read_frames([5]) == [frames[5]]
        assert f.cache.layout._index is None  # still partial: the ends were seen
        assert counting.bytes < len(blob) / 4
        assert f.read_frames([40, 59]) == [frames[40], frames[59]]


RLE = "1.2.840.10008.1.2.5"


def rle_like(count: int, seed: int) -> list[bytes]:
    """Frames that begin as RLE frames do (one segment, at offset 64), with filler."""
    sizes = fake_jpeg_frames(count, seed=seed, min_size=700, max_size=900)
    header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
    return [header + bytes([k % 251]) * (len(f) - 64) for k, f in enumerate(sizes)]


def test_rle_frames_found_a_fragment_each_while_walking():
    frames = rle_like(300, seed=7)
    blob = build_encapsulated(frames, offset_table="empty", transfer_syntax=RLE)
    f, counting = open_counted(blob, "rle.dcm")
    with f:
        assert f.read_frames([5, 7]) == [frames[5], frames[7]]
        assert counting.bytes < len(blob) / 4 and f.cache.layout._index is None
        assert f.read_frames(list(range(300))) == frames


def test_rle_fragments_that_do_not_begin_frames_are_never_served_as_frames():
    """Two fragments a frame (the standard allows one): the second does not begin
    with an RLE header, so no frame is taken for complete while walking; at the end
    the 8 fragments cannot be split into 4 frames. Before, frame 0 came back as its
    first fragment alone."""
    import io

    import numpy as np
    import pydicom
    from pydicom.encaps import generate_frames

    from hdfsspec.testing import build_native

    pixels = np.random.default_rng(5).integers(0, 250, (4, 33, 35, 3)).astype(np.uint8)
    ds = pydicom.dcmread(io.BytesIO(build_native(pixels)))
    ds.compress(RLE)
    frames = list(generate_frames(ds.PixelData, number_of_frames=4))
    blob = build_encapsulated(
        frames, rows=33, cols=35, samples=3, offset_table="empty", fragments_per_frame=2,
        transfer_syntax=RLE, photometric="RGB",
    )  # fmt: skip
    for first_request in (1024, 4096, 65536):
        f, counting = open_counted(
            blob, f"rle-split-{first_request}.dcm", first_request=first_request
        )
        with f:
            for frame in (0, 1, 0):
                with pytest.raises(FrameIndexError, match="cannot split 8 fragments into 4"):
                    f.read_frames([frame])
        assert counting.bytes <= len(blob)


def test_an_rle_fragment_without_header_walks_to_the_end_then_groups_one_to_one():
    frames = rle_like(100, seed=8)
    frames[50] = b"\x00" * 8 + frames[50][8:]  # its header damaged: a fragment all the same
    blob = build_encapsulated(frames, offset_table="empty", transfer_syntax=RLE)
    f, counting = open_counted(blob, "rle-odd.dcm")
    with f:
        assert f.read_frames([10]) == [frames[10]]
        assert counting.bytes < len(blob) / 2  # found while walking
        assert f.read_frames([49]) == [frames[49]]  # ends where frame 50 begins: no header
        assert f.read_frames([70, 20]) == [frames[70], frames[20]]
        assert f.index.offset_table == "scan"


@pytest.mark.parametrize("name", ["bot.dcm", "eot.dcm", "fragmented_empty.dcm", "native_bits.dcm"])
def test_iter_frames_in_order_with_read_ahead(name):
    from conftest import CORPUS

    blob = CORPUS[name]
    f, counting = open_counted(blob, f"it-{name}")
    with f:
        got = list(f.iter_frames(batch_bytes=600))
        ref = reference_frames(blob)
        assert [i for i, _ in got] == list(range(len(ref)))
        assert [b for _, b in got] == ref
        assert counting.bytes <= len(blob) + 4096 + 8 * len(ref)


def test_iter_frames_walks_a_scan_batch_by_batch():
    f, counting = open_counted(BLOB, "iter.dcm")
    with f:
        it = f.iter_frames(batch_bytes=20_000)
        first = [next(it) for _ in range(5)]
        assert [b for _, b in first] == FRAMES[:5]
        assert counting.bytes < len(BLOB) / 5  # the walk is only a batch or two ahead
        rest = list(it)
        assert [b for _, b in rest] == FRAMES[5:]
        assert counting.bytes <= len(BLOB) + 3 * WINDOW
    g, _ = open_counted(BLOB, "iter2.dcm")
    with g:
        assert list(g.iter_frames([7, 3, 1999])) == [
            (7, FRAMES[7]),
            (3, FRAMES[3]),
            (1999, FRAMES[1999]),
        ]
        for _ in g.iter_frames():  # stopping early leaves the file usable
            break
        assert g.read_frames([42]) == [FRAMES[42]]


def test_the_first_batches_of_a_sequential_read_grow_to_the_budget():
    """Batches fetched together share the link: the first ``ramp`` grow, so that they
    arrive one after the other and the next are asked for while the link is busy."""
    f, _ = open_counted(BLOB, "ramp.dcm")
    with f:
        index = f.index
        size = lambda batch: int(sum(index.stops[b] - index.starts[b] for b in batch))  # noqa: E731
        budget = size(range(index.number_of_frames)) // 20
        ramped = list(f.frame_batches(None, budget, ramp=4))
        plain = list(f.frame_batches(None, budget))
        everything = list(range(index.number_of_frames))
        assert [frame for batch in ramped for frame in batch] == everything
        assert [frame for batch in plain for frame in batch] == everything
        for k, batch in enumerate(ramped):  # 1/4, 2/4, 3/4 of the budget, then all of it
            assert size(batch) <= budget * min(k + 1, 4) // 4 or len(batch) == 1
        assert len(ramped[0]) < len(ramped[1]) < len(ramped[2]) and len(ramped) > len(plain)


def test_sequential_reading_rebuilds_the_partial_index_per_round_not_per_frame(monkeypatch):
    import hdfsspec.cache.walk

    builds = []
    real = hdfsspec.cache.walk.scanned_index

    def counted(*args, **kwargs):
        builds.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hdfsspec.cache.walk, "scanned_index", counted)
    f, counting = open_counted(BLOB, "seq.dcm")
    with f:
        assert sum(1 for _ in f.iter_frames(batch_bytes=200_000)) == 2000
    # one per window of the walk (its frames go to the blocks as it goes) and the final
    # index, not one per frame
    assert len(builds) <= 2 * f.stats.phases["index"].requests + 2
    assert counting.bytes <= len(BLOB) + 4096


def test_a_whole_scan_fetches_contiguous_windows_once_each():
    f, counting = open_counted(BLOB, "windows.dcm")
    with f:
        assert f.index.number_of_frames == 2000
        assert f.read_frames([0, 999, 1999]) == [FRAMES[0], FRAMES[999], FRAMES[1999]]
        windows = sorted((a, b) for _, a, b in counting.ranges[1:])  # after the first request
        assert all(b - a <= WINDOW for a, b in windows)
        assert windows[0][0] == 4096  # the first request's bytes are not fetched again
        assert all(b0 == a1 for (_, b0), (a1, _) in itertools.pairwise(windows))
        assert windows[-1][1] == len(BLOB)
        assert counting.bytes == len(BLOB)  # every byte once; the frames came with the scan
        index = f.stats.phases["index"]
        assert index.requests == len(windows) and index.bytes == len(BLOB) - 4096
        assert index.seconds > 0


def test_a_partial_scan_fetches_ahead_no_further_than_its_goal():
    f, counting = open_counted(BLOB, "goal.dcm")
    with f:
        assert f.read_frames([300]) == [FRAMES[300]]
        reached = int(f.cache.view(frames=301).stops[300])
        # the walk aims 2 % past the mean frame size so far, never a pipeline beyond it
        assert counting.bytes <= reached * 1.03 + 2 * 1100
        assert f.cache.layout._index is None
        scanner = f.cache.layout.scan.scanner
    assert scanner._pool is None and not scanner._pending  # closing stops the read-ahead


def test_a_truncated_object_stops_the_scan_with_a_typed_error():
    from hdfsspec import ObjectChangedError, TruncatedDicomError

    cut = BLOB[: len(BLOB) // 2]
    target = fsspec.filesystem("memory")
    target.pipe("/partial/cut.dcm", cut)
    fs = fsspec.filesystem(
        "dicom", fs=target, skip_instance_cache=True, index_cache=False, scan_window=WINDOW
    )
    with fs.open("/partial/cut.dcm", size=len(BLOB)) as f:  # the size of the whole object
        with pytest.raises((TruncatedDicomError, ObjectChangedError)) as err:
            f.index  # noqa: B018
        assert "cut.dcm" in str(err.value)
        assert f.cache.layout.scan.scanner._pool is None  # no windows left in flight


def test_a_walk_staggers_its_first_round():
    """Windows asked for together arrive together (they share the link): the first
    round is staggered, so that the walk of the first overlaps the others' transfer."""
    f, counting = open_counted(BLOB, "windows.dcm", scan_concurrency=4)
    with f:
        assert f.index.number_of_frames == 2000  # the whole walk, no goal
        # after the header request, by offset (windows in flight are logged as they go out)
        sizes = [b - a for _, a, b in sorted(counting.ranges[1:], key=lambda r: r[1])]
        assert sizes[:4] == [WINDOW // 4, WINDOW // 2, 3 * WINDOW // 4, WINDOW]  # staggered
        assert set(sizes[4:-1]) == {WINDOW}  # then whole windows, up to the end
        assert max(b for _, _, b in counting.ranges) == f.size  # up to the end
        assert counting.bytes <= len(BLOB) + 4096  # each byte fetched once
        assert f.read_frames([0, 1999]) == [FRAMES[0], FRAMES[1999]]
    f, counting = open_counted(BLOB, "near.dcm", scan_concurrency=4)
    with f:  # a near goal: staggered too, and stopped near it
        assert f.read_frames([5]) == [FRAMES[5]]
        sizes = [b - a for _, a, b in sorted(counting.ranges[1:], key=lambda r: r[1])]
        assert sizes[:2] == [WINDOW // 4, WINDOW // 2] and f.cache.layout._index is None
        assert counting.bytes <= 4096 + 5 * WINDOW


def test_window_sizes_for_each_case():
    from hdfsspec.cache.item_scan import ItemScanner
    from hdfsspec.dicom.parse import parse_header

    opts = ReadOptions(scan_window=1000, scan_concurrency=4)
    parsed = parse_header(lambda a, b: BLOB[a:b], len(BLOB))
    scanner = ItemScanner(parsed, lambda r: [BLOB[a:b] for a, b in r], 2000, opts)
    assert scanner._window_sizes(4, 9000, first=True) == [250, 500, 750, 1000]
    assert scanner._window_sizes(4, 2500, first=True) == [250, 500, 750, 1000]  # cut at 2500
    assert scanner._window_sizes(2, 9000, first=True) == [750, 1000]
    assert scanner._window_sizes(4, 1000, first=True) == [1000] * 4  # within one window
    assert scanner._window_sizes(4, 9000, first=False) == [1000] * 4


def _walk_state(blob: bytes, targets, fast: bool, monkeypatch) -> list:
    """The scanner's state after each ``advance`` of ``targets``, with or without the fast loop."""
    from hdfsspec.cache.item_scan import ItemScanner
    from hdfsspec.dicom.parse import number_of_frames, parse_header

    fetch = lambda a, b: blob[a:b]  # noqa: E731
    parsed = parse_header(fetch, len(blob), options=ReadOptions(first_request=1024))
    with monkeypatch.context() as patch:
        if not fast:  # the reference: every item by step()
            patch.setattr(ItemScanner, "_walk_plain", lambda self, *a, **k: False)
        options = ReadOptions(scan_window=2048, scan_concurrency=2)
        scanner = ItemScanner(
            parsed, lambda r: [blob[a:b] for a, b in r], number_of_frames(parsed), options
        )
        states = []
        for frames, offset in targets:
            try:
                scanner.advance(frames=frames, offset=offset)
            except FrameIndexError as exc:
                states.append(("error", exc.offset))
                break
            states.append(
                (
                    list(scanner.offsets),
                    list(scanner.lengths),
                    list(scanner.heads),
                    list(scanner.first_fragments),
                    list(scanner.ended),
                    scanner.pos,
                    scanner.done,
                    scanner.complete,
                    scanner.requests,
                )
            )
        scanner.close()
    return states


SCANNED = {
    "one": build_encapsulated(FRAMES[:120], offset_table="empty"),
    "fragmented": build_encapsulated(FRAMES[:60], offset_table="empty", fragments_per_frame=3),
    "rle": build_encapsulated(rle_like(50, seed=3), offset_table="empty", transfer_syntax=RLE),
    "rle-odd": build_encapsulated(FRAMES[:50], offset_table="empty", transfer_syntax=RLE),
    "other": build_encapsulated(
        FRAMES[:40], offset_table="empty", transfer_syntax="1.2.840.10008.1.2.1.98"
    ),
    "single": build_encapsulated(FRAMES[:1], offset_table="empty", fragments_per_frame=4),
}


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(sorted(SCANNED)),
    targets=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 130)),
            st.one_of(st.none(), st.integers(0, 200_000)),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_fast_walk_equals_walking_item_by_item(name, targets):
    """The tight loop over buffered fragments stops where the item-by-item walk stops."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        blob = SCANNED[name]
        fast = _walk_state(blob, targets, True, monkeypatch)
        slow = _walk_state(blob, targets, False, monkeypatch)
    assert fast == slow


def _batches_one_by_one(sizes: list[int], frames: list[int], budget: int, ramp: int):
    """The batches of adding frames one by one (what ``frame_batches`` cuts at once)."""
    from hdfsspec.io.link import ramped_size

    batches, batch, nbytes, made = [], [], 0, 0
    limit = ramped_size(budget, ramp, 1)
    for frame in frames:
        size = max(sizes[frame], 0)
        if batch and nbytes + size > limit:
            batches.append(batch)
            batch, nbytes, made = [], 0, made + 1
            limit = ramped_size(budget, ramp, made + 1)
        batch.append(frame)
        nbytes += size
    return [*batches, batch] if batch else batches


BATCHED = {
    "walked": BLOB,
    "bot": build_encapsulated(FRAMES[:700], offset_table="bot"),
    "uneven": build_encapsulated(
        fake_jpeg_frames(300, seed=9, min_size=100, max_size=9000), offset_table="empty"
    ),
}


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(BATCHED)),
    budget=st.integers(1, 60_000),
    ramp=st.integers(0, 9),
    walk_ahead=st.sampled_from([0, 20_000]),
    subset=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
)
def test_frame_batches_cut_as_adding_frames_one_by_one(name, budget, ramp, walk_ahead, subset):
    import numpy as np

    blob = BATCHED[name]
    f, _ = open_counted(blob, f"batches-{name}.dcm")
    with f:
        total = int(f.header.dataset.NumberOfFrames)
        frames = None
        if subset is not None:
            rng = np.random.default_rng(subset)
            frames = sorted(rng.choice(total, rng.integers(1, total), replace=False).tolist())
        got = list(f.frame_batches(frames, budget, walk_ahead=walk_ahead, ramp=ramp))
        index = f.cache.view(frames=total)
        sizes = (index.stops - index.starts).tolist()
        if index.stops[-1] < 0:  # a Basic Offset Table: the last frame's end is not known
            sizes[-1] = 0
    expected = _batches_one_by_one(sizes, frames or list(range(total)), budget, ramp)
    assert got == expected

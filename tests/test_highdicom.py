"""highdicom objects through hdfsspec: values equal local highdicom, frames fetched in batches."""

from __future__ import annotations

import gc
import io
import os

import fsspec
import highdicom as hd
import numpy as np
import pytest
from conftest import with_short_value
from hypothesis import given, settings
from hypothesis import strategies as st
from test_backends import REGION, SLIDE, TILES

import hdfsspec
from hdfsspec.highdicom.readers import DicomImage, DicomSegmentation
from hdfsspec.testing import (
    CountingFileSystem,
    build_annotations,
    build_encapsulated,
    build_seg,
    build_slide,
    build_sr,
    fake_jpeg_frames,
)

SEG, _ = build_seg(slices=40, segments=6, rows=256, cols=192, seed=2)
EMPTY_BOT_SLIDE = build_slide(512, 512, tile=64, tiles=TILES, offset_table="empty")


def local(blob: bytes):
    return hd.imread(io.BytesIO(blob))


def test_region_one_round_equals_local(backend):
    path = backend.put("slide.dcm", SLIDE)
    fs, counting = backend.counted()
    with hdfsspec.imread(fs.open(path)) as im:
        assert isinstance(im, hd.Image) and counting.requests == 1
        region = im.get_total_pixel_matrix(**REGION)
        assert counting.rounds == 2 and counting.requests <= 4
    assert np.array_equal(region, local(SLIDE).get_total_pixel_matrix(**REGION))


def test_imread_by_url_with_storage_options(backend):
    path = backend.put("slide.dcm", SLIDE)
    im = hdfsspec.imread(backend.url(path), storage_options=backend.storage_options)
    try:
        frames = im.get_frames([2, 9, 33])
        stats = im.file.stats
        assert stats.phases["header"].requests == 1
        assert stats.phases["frames"].requests <= 3 and stats.rounds == 2
    finally:
        im.close()
    assert np.array_equal(frames, local(SLIDE).get_frames([2, 9, 33]))


def test_all_frames_in_cache_sized_batches():
    fs = fsspec.filesystem("memory")
    fs.pipe("/slide.dcm", SLIDE)
    budget = 6 * max(len(t) for t in TILES)  # half of it holds 3 tiles
    with hdfsspec.imread("memory:///slide.dcm", {"max_cache_bytes": budget}) as im:
        matrix = im.get_total_pixel_matrix()
        stats = im.file.stats
        assert stats.rounds >= 10  # many batches: tiles beyond the first request, 3 at a time
        assert stats.phases["frames"].bytes <= len(SLIDE)  # each tile fetched once
        before = stats.phases["frames"].bytes
        stored = im.get_stored_frames(as_indices=True)
        # batch by batch, each decoded before the next evicts it: every tile once more
        assert stats.phases["frames"].bytes - before <= len(SLIDE)
    expected = local(SLIDE)
    assert np.array_equal(matrix, expected.get_total_pixel_matrix())
    assert np.array_equal(stored, expected.get_stored_frames(as_indices=True))


def test_object_outlives_the_call_and_close_releases():
    fs = fsspec.filesystem("memory")
    fs.pipe("/slide2.dcm", SLIDE)

    def load():
        return hdfsspec.imread("memory:///slide2.dcm")

    im = load()
    gc.collect()
    assert np.array_equal(im.get_frame(5), local(SLIDE).get_frame(5))
    f = im.file
    with im:
        pass
    assert f.closed
    with pytest.raises(ValueError, match="closed file"):
        im.get_frame(6)


def test_empty_bot_region_equals_local(backend):
    path = backend.put("empty.dcm", EMPTY_BOT_SLIDE)
    fs, counting = backend.counted()
    with hdfsspec.imread(fs.open(path)) as im:
        region = im.get_total_pixel_matrix(**REGION)
        assert im.file.index.offset_table == "scan"
        assert counting.requests <= 1 + 4 + 3  # header, scan round, tiles not kept by the scan
    assert np.array_equal(region, local(EMPTY_BOT_SLIDE).get_total_pixel_matrix(**REGION))


def test_plain_highdicom_on_a_dicom_file_walks_items_without_requests():
    fs = fsspec.filesystem("memory")
    frames = fake_jpeg_frames(300, min_size=2000, max_size=3000)
    blob = build_encapsulated(frames, offset_table="empty")
    fs.pipe("/plain.dcm", blob)
    dfs = fsspec.filesystem(
        "dicom", target_protocol="memory", max_cache_bytes=2**16, skip_instance_cache=True
    )
    with dfs.open("/plain.dcm") as f:
        im = hd.imread(f, lazy_frame_retrieval=True)  # highdicom builds its own BOT
        stats = f.stats.as_dict()
        # the header, then the walk: its windows shrink to their floor (256 KiB) under so
        # small a cache bound; the item heads are served from memory, not requested
        assert stats["requests"] <= 2 + len(blob) // (256 * 1024) + 2
        assert stats["index"]["hits"] + stats["header"]["hits"] >= 3 * 300  # tag, length, marker
        assert im.get_raw_frame(200) == frames[199]


def test_combined_segments_are_fetched_in_one_round(backend):
    """combine_segments=True: highdicom reads frame by frame (get_stored_frame), not
    through _get_pixels_by_frame; the frames still come in one round."""
    path = backend.put("seg-combined.dcm", SEG)
    fs, counting = backend.counted(first_request=4096)
    with hdfsspec.segread(fs.open(path)) as seg:
        opened, asked = counting.rounds, counting.requests
        plan = seg.plan("get_volume", segment_numbers=[2, 4], combine_segments=True)
        combined = seg.get_volume(segment_numbers=[2, 4], combine_segments=True).array
        assert counting.rounds == opened + 1
        assert counting.requests - asked == plan.requests and plan.frames
    expected = SEG_LOCAL.get_volume(segment_numbers=[2, 4], combine_segments=True).array
    assert np.array_equal(combined, expected)


def test_segread_get_volume_one_round(backend):
    path = backend.put("seg.dcm", SEG)
    fs, counting = backend.counted(first_request=4096)
    seg = hdfsspec.segread(fs.open(path))
    try:
        assert isinstance(seg, hd.seg.Segmentation)
        opened = counting.rounds
        volume = seg.get_volume(segment_numbers=[1, 3, 5])
        assert counting.rounds == opened + 1
        by_frame = seg.get_pixels_by_source_instance(
            [seg.get_source_image_uids()[0][2]], segment_numbers=[2]
        )
    finally:
        seg.close()
    expected = hd.seg.segread(io.BytesIO(SEG))
    assert np.array_equal(volume.array, expected.get_volume(segment_numbers=[1, 3, 5]).array)
    assert np.array_equal(
        by_frame,
        expected.get_pixels_by_source_instance(
            [expected.get_source_image_uids()[0][2]], segment_numbers=[2]
        ),
    )


def test_srread_and_annread_one_request(http_server):
    sr = build_sr("finding text")
    ann = build_annotations(SLIDE, points=50)
    sr_url = http_server.put("sr.dcm", sr)
    ann_url = http_server.put("ann.dcm", ann)
    http_server.log.clear()
    doc = hdfsspec.srread(sr_url)
    assert isinstance(doc, hd.sr.ComprehensiveSR)
    assert "finding text" in str(doc)
    groups = hdfsspec.annread("dicom::" + ann_url).get_annotation_groups()
    assert len(groups) == 1 and groups[0].number_of_annotations == 50
    assert http_server.log.requests == 2
    assert http_server.log.bytes == len(sr) + len(ann)


def test_plan_is_a_dry_run_of_a_pixel_call():
    fs = fsspec.filesystem("memory")
    fs.pipe("/planned.dcm", SLIDE)
    counting_target = CountingFileSystem(fs=fs)
    dfs = fsspec.filesystem(
        "dicom", fs=counting_target, skip_instance_cache=True, first_request=4096
    )
    with hdfsspec.imread(dfs.open("/planned.dcm")) as im:
        opened = counting_target.requests
        plan = im.plan("get_total_pixel_matrix", **REGION)
        assert counting_target.requests == opened  # nothing fetched
        assert plan.frames == (8, 9, 10, 16, 17, 18, 24, 25, 26)  # 3x3 tiles of an 8x8 grid
        assert plan.requests == 1 and plan.nbytes > 0  # rows 5 tiles apart: gaps bridged
        region = im.get_total_pixel_matrix(**REGION)
        assert counting_target.requests == opened + plan.requests
        assert counting_target.ranges[opened:] == [("/planned.dcm", a, b) for a, b in plan.ranges]
        cached = im.plan(im.get_frames, [9, 10])
        assert cached.frames == (8, 9) and cached.requests == 0  # needed, cached now
        assert np.array_equal(region, local(SLIDE).get_total_pixel_matrix(**REGION))


def _counted(name: str, blob: bytes = SLIDE):
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/{name}", blob)
    target = CountingFileSystem(fs=fs)
    dfs = fsspec.filesystem("dicom", fs=target, skip_instance_cache=True, first_request=4096)
    return hdfsspec.imread(dfs.open(f"/{name}")), target


@pytest.mark.parametrize("method", ["get_frame", "get_stored_frame", "get_raw_frame"])
def test_plan_of_a_single_frame_call_is_a_dry_run(method):
    im, target = _counted(f"single-{method}.dcm")
    with im:
        opened = target.requests
        plan = im.plan(method, 12)
        assert plan.frames == (11,) and plan.requests == 1 and target.requests == opened
        assert im.plan(method, 3, as_index=True).frames == (3,)
        with pytest.raises(IndexError):  # highdicom's own check of the number
            im.plan(method, 0)
        assert target.requests == opened
        getattr(im, method)(12)
        assert target.requests == opened + 1 and im.plan(method, 12).requests == 0


def test_plan_in_one_thread_leaves_the_calls_of_others_alone():
    """A dry run is this thread's: a pixel call in another thread meanwhile reads."""
    import threading

    im, _ = _counted("threads.dcm")
    expected = local(SLIDE).get_frames([1, 2, 3])
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                assert np.array_equal(im.get_frames([1, 2, 3]), expected)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    with im:
        worker = threading.Thread(target=read)
        worker.start()
        try:
            for _ in range(200):
                assert im.plan("get_total_pixel_matrix", **REGION).frames
        finally:
            stop.set()
            worker.join(30)
    assert not errors and not worker.is_alive()


def test_pixel_calls_on_a_closed_object_raise_as_a_closed_file_does():
    im, target = _counted("closed.dcm")
    im.close()
    opened = target.requests
    for call in (
        lambda: im.get_frames([1]),
        lambda: im.get_stored_frames([1]),
        lambda: im.get_total_pixel_matrix(**REGION),
        lambda: im.get_frame(1),
        lambda: im.plan("get_frames", [1]),
    ):
        with pytest.raises(ValueError, match="I/O operation on closed file"):
            call()
    assert target.requests == opened


def test_a_shallow_copy_reads_after_the_original_is_gone():
    import copy

    im, _ = _counted("copied.dcm")
    f = im.file
    duplicate = copy.copy(im)
    del im
    gc.collect()
    assert not f.closed  # the copy shares the file: it stays open while one holds it
    assert np.array_equal(duplicate.get_frames([3, 9]), local(SLIDE).get_frames([3, 9]))
    del duplicate
    gc.collect()
    assert f.closed


@pytest.mark.parametrize("number", [2.0, 2.5, np.float64(3)])
def test_frame_numbers_that_are_not_integers_raise_type_error_and_fetch_nothing(number):
    im, target = _counted(f"float-{number}.dcm")
    with im:
        opened = target.requests
        for call in (im.get_frames, im.get_stored_frames):
            with pytest.raises(TypeError):
                call([number])
        with pytest.raises(TypeError):
            im.get_frame(number)
        with pytest.raises(TypeError, match="frame numbers must be integers, not"):
            im.file.read_frames([number])
        with pytest.raises(TypeError, match="frame numbers must be integers, not"):
            im.file.plan([number])
        assert target.requests == opened
        assert np.array_equal(im.get_frames(np.array([2])), local(SLIDE).get_frames([2]))


def test_an_object_without_pixels_is_refused_as_highdicom_lazy_reader_does(tmp_path):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("rtplan.dcm")
    with pytest.raises(ValueError, match="does not represent an image"):
        hd.imread(path, lazy_frame_retrieval=True)
    with pytest.raises(hdfsspec.DicomFormatError, match="does not represent an image") as err:
        hdfsspec.imread(path)
    assert err.value.tag == 0x7FE00010 and err.value.path.endswith("rtplan.dcm")
    assert isinstance(err.value, ValueError)


EOT_SLIDE = build_slide(1024, 1024, tile=64, tiles=TILES, offset_table="eot")  # 256 tiles


def test_an_eot_beyond_the_first_request_is_read_while_highdicom_builds_its_tables(backend):
    path = backend.put("eot.dcm", EOT_SLIDE)
    fs, counting = backend.counted(first_request=2048)  # the header, not the 4 KiB of tables
    with hdfsspec.imread(fs.open(path)) as im:
        assert im.file.metadata is im.file.header  # complete once imread returns
        ranges = counting.ranges
        eot_at, eot_len = im.file.header.header.eot
        # the first request, then the tables (and the item headers up to the frames) at once
        assert len(ranges) == 2 and ranges[0][1:] == (0, 2048)
        header_end = im.file.header.header_end  # (20 bytes more: room for a Total Length)
        assert ranges[1][1] == 2048 and header_end <= ranges[1][2] <= header_end + 20
        assert eot_at + eot_len > 2048  # the table did not fit in the first request
        assert im.file.stats.phases["header"].hits >= 1  # the tables came from the read ahead
        expected = local(EOT_SLIDE)
        # the data set is the whole header's, tables included, as highdicom reads it
        np.testing.assert_array_equal(
            np.frombuffer(im.ExtendedOffsetTable, "<u8"),
            np.frombuffer(expected.ExtendedOffsetTable, "<u8"),
        )
        assert im.ExtendedOffsetTableLengths == expected.ExtendedOffsetTableLengths
        rounds = counting.rounds
        region = im.get_total_pixel_matrix(**REGION)
        assert counting.rounds == rounds + 1 and counting.requests - 2 <= 3  # one round
    np.testing.assert_array_equal(region, expected.get_total_pixel_matrix(**REGION))


def test_a_corrupt_deferred_eot_raises_a_typed_error(tmp_path):
    blob = bytearray(EOT_SLIDE)
    parsed = hdfsspec.dicom.parse.parse_header(lambda a, b: bytes(blob[a:b]), len(blob))
    pos = parsed.header.eot[0]
    blob[pos : pos + 8] = (10**12).to_bytes(8, "little")  # frame 0 beyond the object
    (tmp_path / "bad.dcm").write_bytes(bytes(blob))
    fs = fsspec.filesystem("dicom", first_request=2048, index_cache=False)
    with pytest.raises(hdfsspec.OffsetTableError, match="Extended Offset Table") as err:
        im = hdfsspec.imread(fs.open(str(tmp_path / "bad.dcm")))
        im.get_frames([1])
    assert err.value.path is not None and "bad.dcm" in err.value.path


def _region_costs(http_server, source) -> tuple[np.ndarray, int, int]:
    http_server.log.clear()
    with hdfsspec.imread(source) as im:
        assert isinstance(im.file, hdfsspec.DicomFile)
        region = im.get_total_pixel_matrix(**REGION)
        rounds = im.file.stats.rounds
    return region, http_server.log.requests, rounds


@pytest.mark.parametrize("dicom", [True, False], ids=["dicom-openfile", "plain-openfile"])
def test_imread_of_an_openfile_reads_through_the_dicom_layer(http_server, dicom):
    """``hdfsspec.imread(fsspec.open(url))``, with or without ``dicom::``: the same
    frame-aware reads as the URL itself (requests, rounds and values)."""
    url = http_server.put(f"openfile-{dicom}.dcm", SLIDE)
    expected = local(SLIDE).get_total_pixel_matrix(**REGION)
    by_url, url_requests, url_rounds = _region_costs(http_server, url)
    opened = fsspec.open(("dicom::" if dicom else "") + url)
    region, requests, rounds = _region_costs(http_server, opened)
    assert np.array_equal(by_url, expected) and np.array_equal(region, expected)
    assert (requests, rounds) == (url_requests, url_rounds)
    assert rounds == 2 and requests <= 6  # HEAD + header, then one per row


def test_imread_of_a_path_and_srread_of_an_openfile(tmp_path, http_server):
    path = tmp_path / "slide.dcm"
    path.write_bytes(SLIDE)
    with hdfsspec.imread(path) as im:  # a pathlib.Path, as highdicom takes
        assert im.file.stats.requests == 1
        frames = im.get_frames([1, 6])
        assert im.file.stats.phases["frames"].requests <= 2
    assert np.array_equal(frames, local(SLIDE).get_frames([1, 6]))
    sr = build_sr("open file text")
    url = http_server.put("sr-openfile.dcm", sr)
    http_server.log.clear()
    assert "open file text" in str(hdfsspec.srread(fsspec.open(url)))
    assert http_server.log.bytes == len(sr)


def test_imread_of_an_open_file_reads_it_again_under_the_dicom_layer(http_server, tmp_path):
    """A file opened by fsspec (``fs.open``) or by ``open``: read again by its filesystem
    and path, at the URL's cost; the caller's file is neither moved nor closed."""
    url = http_server.put("openfile-handle.dcm", SLIDE)
    expected = local(SLIDE).get_total_pixel_matrix(**REGION)
    _, url_requests, url_rounds = _region_costs(http_server, url)
    handle = fsspec.filesystem("http", skip_instance_cache=True).open(url)
    handle.seek(7)
    region, requests, rounds = _region_costs(http_server, handle)
    assert np.array_equal(region, expected)
    assert (requests, rounds) == (url_requests, url_rounds)
    assert not handle.closed and handle.tell() == 7
    path = tmp_path / "slide.dcm"
    path.write_bytes(SLIDE)
    with hdfsspec.imread(path) as im:
        im.get_total_pixel_matrix(**REGION)
        by_path = (im.file.stats.requests, im.file.stats.rounds)
    with open(path, "rb") as builtin, hdfsspec.imread(builtin) as im:
        assert np.array_equal(im.get_total_pixel_matrix(**REGION), expected)
        assert (im.file.stats.requests, im.file.stats.rounds) == by_path == (2, 2)
        assert builtin.tell() == 0
    with hdfsspec.imread(os.fsencode(path)) as im:  # a bytes path, as highdicom takes
        assert np.array_equal(im.get_frames([2]), local(SLIDE).get_frames([2]))


def test_what_cannot_name_an_object_is_refused(tmp_path):
    path = tmp_path / "slide.dcm"
    path.write_bytes(SLIDE)
    with pytest.raises(TypeError, match=r"a readable, seekable binary file object, not bytearray"):
        hdfsspec.imread(bytearray(SLIDE))  # (a file object is read: tests/test_sources.py)
    with open(path) as text, pytest.raises(TypeError, match="not TextIOWrapper"):
        hdfsspec.imread(text)
    with pytest.raises(TypeError, match="lazy_frame_retrieval is a keyword"):
        hdfsspec.imread(path, True)  # highdicom's second positional argument
    with open(path, "ab") as appending, pytest.raises(TypeError, match="not BufferedWriter"):
        hdfsspec.imread(appending)
    with open(path, "r+b", buffering=0) as updating, pytest.raises(ValueError, match="rb\\+"):
        hdfsspec.imread(updating)  # a raw FileIO: its mode
    with pytest.raises(TypeError, match="an open file has its filesystem"):
        hdfsspec.imread(fsspec.open(str(path)).open(), {"file": {}})
    assert path.read_bytes() == SLIDE


def test_eager_reads_are_one_whole_request(http_server):
    """``lazy_frame_retrieval=False``, as highdicom takes it: one GET of the whole object,
    the frames in memory (the same classes as lazy reads: ``with`` and ``plan`` work)."""
    url = http_server.put("eager.dcm", SLIDE)
    http_server.log.clear()
    im = hdfsspec.imread(url, lazy_frame_retrieval=False)
    assert isinstance(im, DicomImage) and im.file is None and http_server.log.requests == 1
    assert http_server.log.bytes == len(SLIDE)
    assert np.array_equal(
        im.get_total_pixel_matrix(**REGION), local(SLIDE).get_total_pixel_matrix(**REGION)
    )
    plan = im.plan("get_total_pixel_matrix", **REGION)
    assert plan.frames and plan.requests == 0 and plan.nbytes == 0
    assert plan.frames == hdfsspec.imread(url).plan("get_total_pixel_matrix", **REGION).frames
    with im:
        pass
    assert http_server.log.requests == 1 + 1  # the lazy read's open
    seg_url = http_server.put("eager-seg.dcm", SEG)
    http_server.log.clear()
    seg = hdfsspec.segread(seg_url, lazy_frame_retrieval=False)
    assert isinstance(seg, DicomSegmentation) and http_server.log.requests == 1
    expected = hd.seg.segread(io.BytesIO(SEG)).get_volume(segment_numbers=[2]).array
    assert np.array_equal(seg.get_volume(segment_numbers=[2]).array, expected)
    opened = fsspec.open("dicom::" + url).open()
    assert isinstance(hdfsspec.imread(opened, lazy_frame_retrieval=False), DicomImage)
    assert opened.closed  # a DicomFile given is owned, as by the lazy object


def test_an_openfile_that_is_not_raw_bytes_is_refused(tmp_path):
    path = tmp_path / "slide.dcm"
    path.write_bytes(SLIDE)
    with pytest.raises(ValueError, match="compression 'gzip'"):
        hdfsspec.imread(fsspec.open(str(path), compression="gzip"))
    with pytest.raises(ValueError, match="mode 'wb'"):
        hdfsspec.imread(fsspec.open(str(path), "wb"))
    with pytest.raises(TypeError, match="storage_options"):
        hdfsspec.imread(fsspec.open(str(path)), {"file": {}})
    assert path.read_bytes() == SLIDE  # nothing was opened for writing


@pytest.mark.parametrize(
    "numbers", [[0, 5], [5, 10_000], [-1]], ids=["zero", "beyond", "negative"]
)
@pytest.mark.parametrize("method", ["get_frames", "get_stored_frames"])
def test_invalid_frame_numbers_raise_as_highdicom_does_and_fetch_no_frame(numbers, method):
    """Frame numbers are 1-based: 0, a negative one or one beyond the last raise
    highdicom's own IndexError, and no frame is fetched (-1 is not the last frame)."""
    fsspec.filesystem("memory").pipe_file("/invalid.dcm", SLIDE)
    with pytest.raises(IndexError) as expected:
        getattr(local(SLIDE), method)(numbers)
    with hdfsspec.imread("memory:///invalid.dcm") as im:
        with pytest.raises(IndexError) as got:
            getattr(im, method)(numbers)
        assert str(got.value) == str(expected.value)
        with pytest.raises(IndexError, match="out of range"):
            im.plan(method, numbers)
        assert im.file.stats.phases["frames"].requests == 0
        assert im.file.stats.requests == 1  # the header


EDGE_SLIDE = build_slide(200, 300, tile=64, tiles=TILES[:3])  # partial tiles on two edges
EDGE_LOCAL = hd.imread(io.BytesIO(EDGE_SLIDE))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.tuples(st.integers(0, 199), st.integers(1, 200)),
    cols=st.tuples(st.integers(0, 299), st.integers(1, 300)),
    bound=st.sampled_from([1, 3000, 256 * 2**20]),
)
def test_any_region_equals_local_and_fetches_only_its_tiles(rows, cols, bound):
    """Regions of any size and place (1 pixel, across partial edge tiles, the whole
    matrix): the pixels of local highdicom, the tiles they touch and nothing else, one
    request per row of tiles at most."""
    (r0, r1), (c0, c1) = sorted(rows), sorted(cols)
    r1, c1 = max(r1, r0 + 1), max(c1, c0 + 1)
    args = {"row_start": r0, "row_end": r1, "column_start": c0, "column_end": c1}
    tiles = {
        r * 5 + c
        for r in range(r0 // 64, (r1 - 1) // 64 + 1)
        for c in range(c0 // 64, (c1 - 1) // 64 + 1)
    }
    fsspec.filesystem("memory").pipe_file("/edge.dcm", EDGE_SLIDE)
    with hdfsspec.imread(
        "dicom::memory:///edge.dcm", {"max_cache_bytes": bound, "rtt": 0.0, "bandwidth": 1e3}
    ) as im:
        plan = im.plan("get_total_pixel_matrix", as_indices=True, **args)
        got = im.get_total_pixel_matrix(as_indices=True, **args)
        frames = im.file.stats.phases["frames"]
    assert set(plan.frames) == tiles
    assert np.array_equal(got, EDGE_LOCAL.get_total_pixel_matrix(as_indices=True, **args))
    tile_rows = (r1 - 1) // 64 - r0 // 64 + 1
    if bound > len(EDGE_SLIDE):  # one batch
        assert frames.requests <= tile_rows
    # each tile's block once (twice when the cache cannot hold one: prefetch, then read)
    assert frames.bytes <= 2 * (max(map(len, TILES[:3])) + 8) * len(tiles)


SEG_LOCAL = hd.seg.segread(io.BytesIO(SEG))
SEG_SLICES = SEG_LOCAL.get_volume(segment_numbers=[1]).array.shape[0]


@settings(max_examples=25, deadline=None)
@given(
    segments=st.sets(st.integers(1, 6), min_size=1, max_size=6),
    slices=st.tuples(st.integers(0, SEG_SLICES - 1), st.integers(1, SEG_SLICES)),
    combine=st.booleans(),
)
def test_any_segments_and_slices_of_a_volume_equal_local(segments, slices, combine):
    """get_volume of any segment subset and slice range: local highdicom's array, from
    frames of those segments only (all of them for every slice), in one round."""
    start, end = sorted(slices)
    end = max(end, start + 1)
    kwargs = {
        "segment_numbers": sorted(segments),
        "slice_start": start,
        "slice_end": end,
        "as_indices": True,
        "combine_segments": combine,
    }
    fsspec.filesystem("memory").pipe_file("/seg-any.dcm", SEG)
    with hdfsspec.segread("dicom::memory:///seg-any.dcm", {"rtt": 0.0, "bandwidth": 1e3}) as seg:
        planned = set(seg.plan("get_volume", **kwargs).frames)
        before = seg.file.stats.rounds
        got = seg.get_volume(**kwargs).array
        rounds = seg.file.stats.rounds - before
    assert np.array_equal(got, SEG_LOCAL.get_volume(**kwargs).array)
    of_segments = {
        i
        for i, item in enumerate(SEG_LOCAL.PerFrameFunctionalGroupsSequence)
        if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber in segments
    }
    assert planned <= of_segments and rounds <= 1
    if (start, end) == (0, SEG_SLICES):
        assert planned == of_segments


@settings(max_examples=30, deadline=None)
@given(
    numbers=st.lists(st.integers(1, 64), min_size=1, max_size=20),
    bound=st.sampled_from([1, 3000, 256 * 2**20]),
    stored=st.booleans(),
)
def test_any_frame_list_equals_local(numbers, bound, stored):
    """get_frames / get_stored_frames of any list (repeats, any order) under any cache
    bound: local highdicom's arrays; one round when the cache holds the frames."""
    method = "get_stored_frames" if stored else "get_frames"
    fsspec.filesystem("memory").pipe_file("/frames-any.dcm", SLIDE)
    options = {"max_cache_bytes": bound, "rtt": 0.0, "bandwidth": 1e3, "first_request": 1024}
    with hdfsspec.imread("dicom::memory:///frames-any.dcm", options) as im:
        before = im.file.stats.rounds
        got = getattr(im, method)(numbers)
        rounds = im.file.stats.rounds - before
        requests = im.file.stats.phases["frames"].requests
    assert np.array_equal(got, getattr(local(SLIDE), method)(numbers))
    distinct = len(set(numbers))
    if bound > len(SLIDE):
        assert rounds == 1 and requests <= distinct
    else:  # a block per batch, read again by highdicom when the cache cannot keep it
        assert requests <= 2 * len(numbers)


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
@pytest.mark.parametrize(
    ("tag", "vr", "value"),
    [
        (0x00280008, b"IS", b"abc "),  # Number of Frames: TypeError inside highdicom
        (0x00280008, b"IS", b"100000000000"),  # MemoryError
        (0x00280008, b"IS", b"0 "),  # IndexError at the first frame
        (0x00280010, b"US", b"\x00\x00"),  # Rows 0: ZeroDivisionError
        (0x00480007, b"UL", b"\x00\x00\x00\x00"),  # Total Pixel Matrix Rows 0: TypeError
        (0x00480007, b"UL", b"\x00\xca\x9a\x3b"),  # 10**9 rows: highdicom busy for minutes
    ],
    ids=["frames-abc", "frames-1e11", "frames-0", "rows-0", "matrix-0", "matrix-1e9"],
)
def test_damaged_image_attributes_raise_a_typed_error_at_the_open(tag, vr, value):
    blob = with_short_value(SLIDE, tag, vr, value)
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/damaged-{tag:x}-{value.hex()}.dcm", blob)
    with pytest.raises(hdfsspec.FrameIndexError) as err:
        hdfsspec.imread(f"memory:///damaged-{tag:x}-{value.hex()}.dcm")
    assert err.value.tag == tag and 0 < err.value.offset < len(blob)

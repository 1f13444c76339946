"""Slides and series of many instances: open_slide and read_series_volume.

Values are checked against highdicom (and OpenSlide) reading local copies; every read
counts its requests and rounds through a counting wrapper of the real backend.
"""

from __future__ import annotations

import io
import pickle
import random

import fsspec
import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import make_backend

import hdfsspec
from hdfsspec.highdicom.readers import DicomImage
from hdfsspec.instances import open_instances, read_whole
from hdfsspec.testing import CountingFileSystem, build_ct_series, build_native, build_pyramid

PYRAMID = build_pyramid(500, 380, levels=3, tile=64, seed=1)
OTHER = build_pyramid(300, 200, levels=2, tile=64, label=False, overview=False, seed=2)
# stored under names whose order is not the levels' order
NAMES = {
    "level-2.dcm": "a.dcm",
    "label.dcm": "b.dcm",
    "level-0.dcm": "c.dcm",
    "overview.dcm": "d.dcm",
    "level-1.dcm": "e.dcm",
}
FIRST = 2048  # bytes of each object's first request: the headers, not the tiles
CT = build_ct_series(6, rows=32, cols=48, seed=4)


@pytest.fixture(params=["memory", "s3", "gcs"])
def store(request, tmp_path_factory):
    """The backends a slide is read from: memory, S3 (moto server) and GCS (emulator)."""
    return make_backend(request.param, request, tmp_path_factory)


class Counting(CountingFileSystem):
    """Counts ``info`` calls too: a HEAD request each on an object store."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.infos = 0

    def info(self, path, **kwargs):
        self.infos += 1
        return super().info(path, **kwargs)

    def reset(self) -> None:
        super().reset()
        self.infos = 0


def counted(store, **options):
    """A ``dicom`` filesystem over a counting wrapper of the store's target."""
    counting = Counting(fs=store.target)
    return fsspec.filesystem("dicom", fs=counting, skip_instance_cache=True, **options), counting


def put_all(store, prefix: str, blobs: dict[str, bytes]) -> str:
    """Store ``blobs`` under ``prefix``; return the prefix's path on the target."""
    for name, blob in blobs.items():
        if store.name == "file":  # local directories are made before their files
            store.target.makedirs(f"{store.root}/{prefix}/{name}".rsplit("/", 1)[0], True)
        store.put(f"{prefix}/{name}", blob)
    return f"{store.root}/{prefix}"


def put_pyramid(store, prefix: str = "slide") -> str:
    return put_all(store, prefix, {NAMES[k]: v for k, v in PYRAMID.items()})


def local(name: str, blobs: dict[str, bytes] = PYRAMID) -> hd.Image:
    return hd.imread(io.BytesIO(blobs[name]))


def uid(blob: bytes, keyword: str = "SOPInstanceUID") -> str:
    return str(getattr(pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True), keyword))


def local_region(name: str, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    return local(name).get_total_pixel_matrix(
        row_start=rows[0], row_end=rows[1], column_start=cols[0], column_end=cols[1],
        as_indices=True, dtype=np.uint8,
    )  # fmt: skip


# -- opening ----------------------------------------------------------------------------------
def test_open_reads_every_header_in_one_round(store):
    prefix = put_pyramid(store)
    fs, counting = counted(store, first_request=FIRST)
    with hdfsspec.open_slide(prefix, filesystem=fs) as slide:
        assert (counting.rounds, counting.requests) == (1, len(PYRAMID))
        assert {p for p, _, _ in counting.ranges} == {f"{prefix}/{n}" for n in NAMES.values()}
        sizes = {f"{prefix}/{NAMES[k]}": len(v) for k, v in PYRAMID.items()}
        assert all((a, b) == (0, min(FIRST, sizes[p])) for p, a, b in counting.ranges)
        assert slide.level_count == 3
        assert slide.level_dimensions == ((500, 380), (250, 190), (125, 95))
        assert slide.dimensions == (500, 380)
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.level_spacings == ((0.00025,) * 2, (0.0005,) * 2, (0.001,) * 2)
        levels = [uid(PYRAMID[f"level-{k}.dcm"]) for k in range(3)]
        assert [im.SOPInstanceUID for im in slide.levels] == levels
        assert all(isinstance(im, DicomImage) for im in slide.levels)
        assert sorted(slide.associated) == ["label", "overview"]
        assert slide.associated["label"].SOPInstanceUID == uid(PYRAMID["label.dcm"])
        assert slide.series_uid == uid(PYRAMID["level-0.dcm"], "SeriesInstanceUID")
        assert (counting.rounds, counting.requests) == (1, len(PYRAMID))  # nothing more
        assert counting.infos == 0  # sizes and versions came with the listing: no HEAD
    assert all(im.file is None or im.file.closed for im in slide.levels)


def test_open_by_url_with_storage_options(store):
    prefix = put_pyramid(store)
    url = "dicom::" + store.url(prefix) + "/"
    options = {**store.storage_options, "first_request": FIRST}
    with hdfsspec.open_slide(url, storage_options=options) as slide:
        assert slide.level_dimensions == ((500, 380), (250, 190), (125, 95))
        for im in (*slide.levels, *slide.associated.values()):
            assert im.file.stats.phases["header"].requests == 1
            assert im.file.stats.requests == 1
        region = slide.read_region((200, 100), 1, (90, 70), as_array=True)
        assert slide.levels[1].file.stats.rounds == 2  # the header's, then the tiles'
    assert np.array_equal(region, local_region("level-1.dcm", (50, 120), (100, 190)))


def test_glob_and_list_select_their_objects(store):
    prefix = put_pyramid(store)
    store.put("slide/notes.json", b'{"not": "dicom"}')
    fs, counting = counted(store, first_request=FIRST)
    with hdfsspec.open_slide(prefix + "/*.dcm", filesystem=fs) as slide:  # no json: no warning
        assert slide.level_count == 3 and sorted(slide.associated) == ["label", "overview"]
        assert (counting.rounds, counting.requests) == (1, len(PYRAMID))
    chosen = [f"{prefix}/{NAMES[n]}" for n in ("level-1.dcm", "level-0.dcm", "label.dcm")]
    urls = [store.url(p) for p in chosen]
    with hdfsspec.open_slide(urls, storage_options=store.storage_options) as slide:
        assert slide.level_dimensions == ((500, 380), (250, 190))
        assert list(slide.associated) == ["label"]
        assert slide.levels[0].SOPInstanceUID == uid(PYRAMID["level-0.dcm"])


def test_non_dicom_objects_are_skipped_with_a_warning_or_raised(store):
    prefix = put_pyramid(store)
    store.put("slide/notes.json", b'{"not": "dicom"}')
    store.put("slide/empty", b"")
    fs, counting = counted(store, first_request=FIRST)
    with pytest.warns(hdfsspec.SkippedObjectWarning) as caught:
        slide = hdfsspec.open_slide(prefix, filesystem=fs)
    with slide:
        assert slide.level_count == 3
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "empty" in messages[0] and "notes.json" in messages[1]
    assert counting.rounds == 1 and counting.requests == len(PYRAMID) + 1  # not the empty one
    with pytest.raises(hdfsspec.NotDicomError, match=r"slide/empty: an empty object"):
        hdfsspec.open_slide(prefix, filesystem=fs, non_dicom="raise")
    with pytest.raises(hdfsspec.NotDicomError, match=r"notes\.json"):  # a list: raised
        hdfsspec.open_slide(
            [store.url(f"{prefix}/c.dcm"), store.url(f"{prefix}/notes.json")],
            storage_options=store.storage_options,
        )


def test_mixed_series_raise_naming_both_unless_one_is_chosen(store):
    prefix = put_pyramid(store, "study")
    put_all(store, "study/other", OTHER)
    fs, _ = counted(store, first_request=FIRST)
    ours = uid(PYRAMID["level-0.dcm"], "SeriesInstanceUID")
    theirs = uid(OTHER["level-0.dcm"], "SeriesInstanceUID")
    with pytest.raises(hdfsspec.MixedSeriesError) as raised:
        hdfsspec.open_slide(prefix, filesystem=fs)
    assert ours in str(raised.value) and theirs in str(raised.value)
    assert set(raised.value.series_uids) == {ours, theirs}
    assert "series_uid=" in str(raised.value) and prefix in str(raised.value)
    with hdfsspec.open_slide(prefix, filesystem=fs, series_uid=theirs) as slide:
        assert slide.level_dimensions == ((300, 200), (150, 100))
        assert not slide.associated
    with pytest.raises(hdfsspec.SeriesError, match=r"no object of series 1\.2\.3"):
        hdfsspec.open_slide(prefix, filesystem=fs, series_uid="1.2.3")


def test_missing_prefix_and_a_ct_series_are_clear_errors(store):
    fs, _ = counted(
        store,
    )
    with pytest.raises(hdfsspec.SeriesError, match="no object under it"):
        hdfsspec.open_slide(f"{store.root}/nothing-here", filesystem=fs)
    prefix = put_all(store, "ct", {f"{k}.dcm": b for k, b in enumerate(CT)})
    with pytest.raises(hdfsspec.SeriesError, match=r"no VOLUME image.*read_series_volume"):
        hdfsspec.open_slide(prefix, filesystem=fs)


# -- regions ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("location", "level", "size"),
    [
        ((200, 100), 1, (90, 70)),  # inside level 1, 2 x 2 tiles
        ((0, 0), 0, (64, 64)),  # one tile of level 0
        ((440, 340), 1, (64, 64)),  # across the bottom-right corner of level 1
        ((-40, -24), 2, (40, 30)),  # across the top-left corner of level 2
    ],
)
def test_region_equals_local_highdicom_and_costs_one_round(store, location, level, size):
    prefix = put_pyramid(store)
    fs, counting = counted(store, first_request=FIRST)
    with hdfsspec.open_slide(prefix, filesystem=fs) as slide:
        plan = slide.plan_region(location, level, size)
        counting.reset()
        image = slide.read_region(location, level, size)
        assert counting.rounds == 1 and counting.requests == plan.requests <= 2
        assert counting.bytes == plan.nbytes
        assert counting.bytes < len(PYRAMID[f"level-{level}.dcm"]) // 2
        counting.reset()
        array = slide.read_region(location, level, size, as_array=True)  # cached tiles
        assert counting.requests == 0 and counting.infos == 0
    assert image.mode == "RGBA" and image.size == size
    ds = 2**level
    x, y, (w, h) = location[0] // ds, location[1] // ds, slide.level_dimensions[level]
    rows, cols = (max(y, 0), min(y + size[1], h)), (max(x, 0), min(x + size[0], w))
    inside = (slice(rows[0] - y, rows[1] - y), slice(cols[0] - x, cols[1] - x))
    expected = np.zeros((size[1], size[0], 3), np.uint8)
    expected[inside] = local_region(f"level-{level}.dcm", rows, cols)
    alpha = np.zeros((size[1], size[0]), np.uint8)
    alpha[inside] = 255
    assert np.array_equal(array, expected)
    assert np.array_equal(np.asarray(image), np.dstack([expected, alpha]))


def test_region_outside_the_level_fetches_nothing(store):
    prefix = put_pyramid(store)
    fs, counting = counted(store, first_request=FIRST)
    with hdfsspec.open_slide(prefix, filesystem=fs) as slide:
        counting.reset()
        image = slide.read_region((1000, 0), 0, (16, 8))
        assert counting.requests == 0 and slide.plan_region((1000, 0), 0, (16, 8)).requests == 0
        assert np.array_equal(np.asarray(image), np.zeros((8, 16, 4), np.uint8))
        with pytest.raises(IndexError, match="level 3 of a slide of 3 levels"):
            slide.read_region((0, 0), 3, (8, 8))
        with pytest.raises(ValueError, match="not negative"):
            slide.read_region((0, 0), 0, (-1, 8))


def test_choosing_levels_by_downsample_and_spacing():
    memory = fsspec.filesystem("memory")
    for name, blob in PYRAMID.items():
        memory.pipe(f"/levels/{name}", blob)
    with hdfsspec.open_slide("memory:///levels/") as slide:
        picks = [slide.get_best_level_for_downsample(d) for d in (0.5, 1, 1.9, 2, 3.99, 4, 100)]
        assert picks == [0, 0, 0, 1, 1, 2, 2]
        spacing = [slide.level_for_spacing(s) for s in (0.0001, 0.00025, 0.0007, 0.001, 1.0)]
        assert spacing == [0, 0, 1, 2, 2]
        label = slide.read_associated("label", as_array=True)
        assert np.array_equal(label, local("label.dcm").get_total_pixel_matrix(dtype=np.uint8))
        assert slide.read_associated("overview").size == (64, 64)
        with pytest.raises(KeyError, match="label"):
            slide.read_associated("macro")


# -- OpenSlide's conventions ------------------------------------------------------------------
def test_regions_and_levels_equal_openslide(tmp_path, request, tmp_path_factory):
    """A pyramid of uncompressed tiles (every decoder reads the same values), read from S3,
    against OpenSlide reading local copies: locations in level-0 pixels, sizes in the
    level's, transparent outside. (OpenSlide interpolates a location that is no multiple
    of the downsample; the locations here are multiples.)"""
    openslide = pytest.importorskip("openslide")
    blobs = build_pyramid(500, 380, levels=4, tile=64, native=True, seed=3)
    for name, blob in blobs.items():
        (tmp_path / name).write_bytes(blob)
    oracle = openslide.OpenSlide(str(tmp_path / "level-0.dcm"))
    s3 = make_backend("s3", request, tmp_path_factory)
    prefix = put_all(s3, "native", blobs)
    with hdfsspec.open_slide(s3.url(prefix), storage_options=s3.storage_options) as slide:
        assert slide.level_count == oracle.level_count
        assert slide.level_dimensions == oracle.level_dimensions
        assert slide.level_downsamples == pytest.approx(oracle.level_downsamples, rel=1e-12)
        for d in (0.5, 1, 1.5, 2, 3, 4, 7.9, 8, 50):
            assert slide.get_best_level_for_downsample(d) == oracle.get_best_level_for_downsample(
                d
            )
        regions = [
            ((100, 60), 1, (90, 70)),
            ((0, 0), 0, (500, 380)),
            ((-30, -20), 0, (100, 60)),
            ((-64, 320), 2, (80, 40)),
            ((440, 300), 1, (64, 64)),
            ((480, 368), 2, (20, 20)),
            ((0, 0), 3, (70, 50)),  # level 3 is 63 x 48: downsample 7.93, not 8
        ]
        for location, level, size in regions:
            ours = np.asarray(slide.read_region(location, level, size))
            theirs = np.asarray(oracle.read_region(location, level, size))
            assert np.array_equal(ours, theirs), (location, level, size)
        label = np.asarray(slide.read_associated("label"))
        assert np.array_equal(label, np.asarray(oracle.associated_images["label"]))
    oracle.close()


# -- a CT series as a volume ------------------------------------------------------------------
def ct_prefix(store, prefix: str, slices: list[bytes]) -> str:
    order = list(range(len(slices)))
    random.Random(5).shuffle(order)  # names in no spatial order
    return put_all(store, prefix, {f"{k:02d}.dcm": slices[i] for k, i in enumerate(order)})


def local_volume(slices: list[bytes], **options) -> hd.Volume:
    return hd.get_volume_from_series([pydicom.dcmread(io.BytesIO(b)) for b in slices], **options)


def test_series_volume_equals_highdicom(store):
    prefix = ct_prefix(store, "ct", CT)
    fs, counting = counted(store, first_request=FIRST)
    volume = hdfsspec.read_series_volume(prefix, filesystem=fs)
    # the first bytes of every slice in one round, then the rest of each, read by each
    # file at once (its own version): every byte once
    assert counting.requests == 2 * len(CT)
    assert counting.rounds == 1 + len(CT)  # the files' reads: one round each, concurrent
    assert counting.bytes == sum(len(b) for b in CT)
    expected = local_volume(CT)
    assert isinstance(volume, hd.Volume)
    assert np.array_equal(volume.array, expected.array)
    assert np.array_equal(volume.affine, expected.affine)
    fs, counting = counted(store, first_request=64 * 1024)  # the slices fit in one request
    options = {"dtype": np.int32, "apply_modality_transform": False}
    stored = hdfsspec.read_series_volume(prefix, filesystem=fs, **options)
    assert (counting.rounds, counting.requests) == (1, len(CT))
    assert np.array_equal(stored.array, local_volume(CT, **options).array)


def test_a_slice_replaced_before_the_rest_of_it_is_read_raises(store):
    if store.name == "gcs":
        pytest.skip("GCS reads are not pinned to a generation (the emulator ignores it)")
    prefix = ct_prefix(store, "ct-replaced", CT)
    fs = fsspec.filesystem(
        "dicom", fs=store.target, first_request=FIRST, index_cache=False, skip_instance_cache=True
    )
    _, files = open_instances(prefix, None, filesystem=fs)
    try:
        victim = files[0]
        blob = bytearray(store.target.cat_file(victim.path))
        blob[-100:] = bytes(255 - b for b in blob[-100:])  # the same size, other pixels
        store.target.pipe_file(victim.path, bytes(blob))
        with pytest.raises(hdfsspec.ObjectChangedError):
            read_whole(files)  # never the first bytes of one version and the rest of another
    finally:
        for f in files:
            f.close()


def test_series_volume_of_a_list_and_of_one_series_among_two(store):
    prefix = ct_prefix(store, "cts/a", CT)
    other = build_ct_series(3, rows=32, cols=48, seed=9)
    put_all(store, "cts/b", {f"{k}.dcm": b for k, b in enumerate(other)})
    fs, _ = counted(store, first_request=FIRST)
    urls = [store.url(p) for p in sorted(store.target.find(prefix))]
    volume = hdfsspec.read_series_volume(urls, storage_options=store.storage_options)
    assert np.array_equal(volume.array, local_volume(CT).array)
    with pytest.raises(hdfsspec.MixedSeriesError) as raised:
        hdfsspec.read_series_volume(f"{store.root}/cts", filesystem=fs)
    assert uid(CT[0], "SeriesInstanceUID") in str(raised.value)
    assert uid(other[0], "SeriesInstanceUID") in str(raised.value)
    chosen = hdfsspec.read_series_volume(
        f"{store.root}/cts", filesystem=fs, series_uid=uid(other[0], "SeriesInstanceUID")
    )
    assert np.array_equal(chosen.array, local_volume(other).array)


def test_series_of_a_multiframe_image_is_refused():
    memory = fsspec.filesystem("memory")
    blob = build_native(np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5))
    memory.pipe("/multi/one.dcm", blob)
    with pytest.raises(hdfsspec.SeriesError, match=r"one\.dcm is a multi-frame image"):
        hdfsspec.read_series_volume("memory:///multi/")


@pytest.mark.parametrize("name", ["file", "s3", "gcs"])
def test_a_later_open_reads_no_header(name, request, tmp_path_factory, tmp_path):
    """With the persisted index store, the headers of a slide read before cost nothing."""
    store = make_backend(name, request, tmp_path_factory)
    prefix = put_pyramid(store)
    index_cache = str(tmp_path / "index")
    fs, counting = counted(store, first_request=FIRST, index_cache=index_cache)
    with hdfsspec.open_slide(prefix, filesystem=fs) as slide:
        first = slide.read_region((200, 100), 1, (90, 70), as_array=True)
        assert counting.rounds == 2
        for level in range(slide.level_count):  # each index built (and persisted) on use
            slide.read_region((0, 0), level, (8, 8))
        for name in slide.associated:
            slide.read_associated(name)
    fs, counting = counted(store, first_request=FIRST, index_cache=index_cache)
    with hdfsspec.open_slide(prefix, filesystem=fs) as slide:
        assert slide.level_dimensions == ((500, 380), (250, 190), (125, 95))
        assert counting.requests == 0 and counting.infos == 0
        again = slide.read_region((200, 100), 1, (90, 70), as_array=True)
        assert counting.rounds == 1
    assert np.array_equal(first, again)
    assert np.array_equal(again, local_region("level-1.dcm", (50, 120), (100, 190)))


def test_a_slide_pickles_and_reads_where_unpickled():
    memory = fsspec.filesystem("memory")
    for name, blob in PYRAMID.items():
        memory.pipe(f"/pickled/{name}", blob)
    with hdfsspec.open_slide("memory:///pickled/", {"first_request": FIRST}) as slide:
        copy = pickle.loads(pickle.dumps(slide))
    with copy:
        assert copy.level_dimensions == slide.level_dimensions
        assert sorted(copy.associated) == ["label", "overview"]
        region = copy.read_region((200, 100), 1, (90, 70), as_array=True)
        assert copy.levels[1].file.stats.phases["frames"].requests == 1
    assert np.array_equal(region, local_region("level-1.dcm", (50, 120), (100, 190)))


def test_a_list_of_http_urls(request, tmp_path_factory):
    """A list is opened object by object, concurrently: over HTTP, a HEAD and a GET each."""
    store = make_backend("http", request, tmp_path_factory)
    urls = [store.put(f"slide/{NAMES[k]}", v) for k, v in PYRAMID.items()]
    fs, counting = counted(store, first_request=FIRST)
    with hdfsspec.open_slide(urls, filesystem=fs) as slide:
        assert (counting.requests, counting.infos) == (len(PYRAMID), len(PYRAMID))
        assert slide.level_dimensions == ((500, 380), (250, 190), (125, 95))
        counting.reset()
        region = slide.read_region((200, 100), 1, (90, 70), as_array=True)
        assert counting.rounds == 1 and counting.infos == 0
    assert np.array_equal(region, local_region("level-1.dcm", (50, 120), (100, 190)))

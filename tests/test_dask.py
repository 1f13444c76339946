"""hdfsspec.to_dask: a slide as a dask array, its chunks read through the frame-aware cache.

Values are compared with highdicom on a local copy (the oracle); requests and bytes with
the frames the chunks cover, taken from pydicom's parse of the same bytes.
"""

from __future__ import annotations

import io
import pickle

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import make_backend
from pydicom.encaps import generate_fragmented_frames, parse_fragments

import hdfsspec
from hdfsspec.testing import build_native, build_seg, build_slide, jpeg_tiles

dask = pytest.importorskip("dask")
from hdfsspec.dask import OPENED, ImageRef  # noqa: E402  (needs dask)

TILE = 64
TILES = jpeg_tiles(9, TILE, 3, seed=5)
ROWS, COLS = 8, 10  # tiles down and across; the last column and row cut short
HEIGHT, WIDTH = ROWS * TILE - 24, COLS * TILE - 40
SMALL = build_slide(4 * TILE, 5 * TILE - 8, tile=TILE, tiles=TILES)  # for the cluster
SLIDES = {
    table: build_slide(HEIGHT, WIDTH, tile=TILE, tiles=TILES, offset_table=table)
    for table in ("bot", "empty")
}


def oracle(blob: bytes, **kwargs) -> np.ndarray:
    return hd.imread(io.BytesIO(blob)).get_total_pixel_matrix(**kwargs)


def frame_blocks(blob: bytes) -> list[tuple[int, int]]:
    """Each frame's ``(first item header, end of its value + the next item header)``, as
    pydicom parses the bytes (one fragment a frame here)."""
    ds = pydicom.dcmread(io.BytesIO(blob))
    value = ds.PixelData
    first = 8 + int.from_bytes(value[4:8], "little")  # past the Basic Offset Table item
    _, positions = parse_fragments(value[first:])
    n = int(ds.NumberOfFrames)
    frames = list(generate_fragmented_frames(value, number_of_frames=n))
    base = ds["PixelData"].file_tell + first
    assert all(len(f) == 1 for f in frames) and len(positions) == n
    return [
        (base + p, base + p + 8 + len(f[0]) + 8) for p, f in zip(positions, frames, strict=True)
    ]


@pytest.fixture
def s3(request, tmp_path_factory):
    return make_backend("s3", request, tmp_path_factory)


def _open(backend, table: str, **dicom_options):
    path = backend.put(f"slide-{table}.dcm", SLIDES[table])
    options = {**backend.storage_options, **dicom_options}
    return hdfsspec.imread(backend.url(path), storage_options=options)


@pytest.mark.parametrize("table", ["bot", "empty"])
def test_whole_array_equals_highdicom_over_s3(s3, table):
    blob = SLIDES[table]
    im = _open(s3, table)
    with im:
        arr = hdfsspec.to_dask(im, dtype=np.uint8)
        assert arr.shape == (HEIGHT, WIDTH, 3) and arr.dtype == np.uint8
        assert arr.chunks[:2] == (
            (TILE,) * (ROWS - 1) + (TILE - 24,),
            (TILE,) * (COLS - 1) + (TILE - 40,),
        )
        assert arr.numblocks == (ROWS, COLS, 1)
        got = arr.compute()
        stats = im.file.stats.phases
    header = stats["header"].bytes
    assert stats["header"].requests == 1  # the open
    # the tiles the open's bytes do not hold, each fetched once
    beyond = [(a, b) for a, b in frame_blocks(blob) if b > header]
    if table == "bot":  # one request a task (a tile)
        assert stats["frames"].requests == len(beyond) and stats["index"].requests == 0
        assert stats["frames"].bytes <= sum(b - a for a, b in beyond)
    else:  # the walk of the items brings them all, in one window
        assert stats["index"].requests == 1 and stats["frames"].requests == 0
        assert stats["index"].bytes == len(blob) - header
    assert np.array_equal(got, oracle(blob, dtype=np.uint8))


def test_default_dtype_and_grouped_chunks_as_highdicom(s3):
    blob = SLIDES["bot"]
    with _open(s3, "bot") as im:
        arr = hdfsspec.to_dask(im, tiles_per_chunk=(3, 4))
        assert arr.dtype == np.float64  # highdicom's default
        assert arr.chunks[:2] == (
            (3 * TILE, 3 * TILE, 2 * TILE - 24),
            (4 * TILE, 4 * TILE, 2 * TILE - 40),
        )
        got = arr.compute()
        # each chunk one batch: 9 chunks, each at most one request a run of tiles
        assert im.file.stats.phases["frames"].requests <= 9 * 3
    assert np.array_equal(got, oracle(blob))


def test_region_fetches_only_its_tiles(s3):
    blob = SLIDES["bot"]
    blocks = frame_blocks(blob)
    with _open(s3, "bot") as im:
        arr = hdfsspec.to_dask(im, dtype=np.uint8)
        header = im.file.stats.bytes
        rows, cols = slice(5 * TILE + 10, 7 * TILE + 3), slice(6 * TILE + 1, 8 * TILE - 5)
        before = im.file.stats.phases["frames"].requests
        got = arr[rows, cols].compute()
        wanted = [r * COLS + c for r in (5, 6, 7) for c in (6, 7)]  # the tiles it covers
        frames = im.file.stats.phases["frames"]
        assert frames.requests - before == len(wanted)  # one task a tile, one request each
        assert frames.bytes == sum(blocks[k][1] - blocks[k][0] for k in wanted)
        assert min(blocks[k][0] for k in wanted) >= header  # none came with the open
    assert np.array_equal(got, oracle(blob, dtype=np.uint8)[rows, cols])


def test_tokenize_is_cheap_and_deterministic(s3):
    from dask.base import normalize_token, tokenize

    with _open(s3, "bot") as im:
        before = im.file.stats.as_dict()
        token = tokenize(im)
        assert tokenize(im) == token
        assert im.file.stats.as_dict() == before  # nothing read to tokenize
        assert len(pickle.dumps(normalize_token(im))) < 1000  # not the image's tables
        assert hdfsspec.to_dask(im).name == hdfsspec.to_dask(im).name
        assert hdfsspec.to_dask(im).name != hdfsspec.to_dask(im, dtype=np.uint8).name
        with _open(s3, "bot") as again:  # the same version of the same object
            assert tokenize(again) == token
        with _open(s3, "empty") as other:
            assert tokenize(other) != token


def test_tasks_pickle_small_without_bytes_of_the_object(s3):
    blob = SLIDES["bot"]
    with _open(s3, "bot") as im:
        arr = hdfsspec.to_dask(im, dtype=np.uint8)
        tasks = dict(arr.__dask_graph__())
        assert len(tasks) == ROWS * COLS
        sizes = [len(pickle.dumps(task)) for task in tasks.values()]
        assert max(sizes) < 4096
        pickled = pickle.dumps(next(iter(tasks.values())))
        assert blob[132:1000] not in pickled and TILES[0][:200] not in pickled
        ref = pickle.loads(pickle.dumps(ImageRef(im)))
        assert ref.held is None and ref.token == ImageRef(im).token


def test_tasks_reopen_the_object_once_when_the_image_is_closed(s3):
    blob = SLIDES["bot"]
    with _open(s3, "bot") as im:
        arr = hdfsspec.to_dask(im, dtype=np.uint8)
    # the image is closed: the tasks reopen the object, once for the process
    got = arr[:TILE, :TILE].compute()
    assert np.array_equal(got, oracle(blob, dtype=np.uint8)[:TILE, :TILE])
    reopened = OPENED.images[ImageRef(im).token]
    assert reopened.file.stats.phases["header"].requests == 1
    arr[TILE : 2 * TILE, :TILE].compute()
    assert OPENED.images[ImageRef(im).token] is reopened


def test_frames_of_an_image_that_is_not_tiled_are_stacked(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 4096, (7, 9, 5), dtype=np.uint16)
    path = tmp_path / "frames.dcm"
    path.write_bytes(build_native(frames))
    with hdfsspec.imread(str(path)) as im:
        arr = hdfsspec.to_dask(im, tiles_per_chunk=3, dtype=np.uint16)
        assert arr.chunks == ((3, 3, 1), (9,), (5,))
        got = arr[2:6].compute()
        assert im.file.stats.phases["frames"].requests <= 2  # two chunks, one batch each
    assert np.array_equal(got, frames[2:6])


def test_bad_arguments_are_refused(s3, tmp_path):
    with _open(s3, "bot") as im:
        with pytest.raises(ValueError, match="tiles_per_chunk"):
            hdfsspec.to_dask(im, tiles_per_chunk=0)
        with pytest.raises(TypeError, match="storage_options"):
            hdfsspec.to_dask(im, storage_options={"s3": {}})
    path = tmp_path / "slide.dcm"
    path.write_bytes(SLIDES["bot"])
    with hdfsspec.imread(str(path), lazy_frame_retrieval=False) as eager:
        with pytest.raises(TypeError, match="lazy_frame_retrieval"):
            hdfsspec.to_dask(eager)
    seg_path = tmp_path / "seg.dcm"
    seg_path.write_bytes(build_seg(slices=2, segments=2, rows=16, cols=16)[0])
    with hdfsspec.segread(str(seg_path)) as seg:
        with pytest.raises(TypeError, match="Segmentation"):
            hdfsspec.to_dask(seg)


def _worker_stats(token: str) -> dict[str, int] | None:
    """In a worker: the counters of the image it reopened for ``token``, if any."""
    from hdfsspec.dask import OPENED

    image = OPENED.images.get(token)
    if image is None:
        return None
    stats = image.file.stats
    return {
        "header": stats.phases["header"].requests,
        "requests": stats.phases["frames"].requests,
        "bytes": stats.phases["frames"].bytes,
    }


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_local_cluster_of_two_processes_computes_the_whole_array(s3):
    distributed = pytest.importorskip("distributed")
    blob = SMALL
    # options of the dicom layer travel with the tasks (conftest's defaults do not)
    fixed = {"first_request": 16384, "rtt": 0.02, "bandwidth": 100e6}
    path = s3.put("small.dcm", SMALL)
    with hdfsspec.imread(s3.url(path), storage_options={**s3.storage_options, **fixed}) as im:
        arr = hdfsspec.to_dask(im, dtype=np.uint8)
        token = ImageRef(im).token
        with (
            distributed.LocalCluster(
                n_workers=2,
                processes=True,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=50,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            got, mean = dask.compute(arr, arr.mean())
            stats = [s for s in client.run(_worker_stats, token).values() if s is not None]
        assert im.file.stats.phases["frames"].requests == 0  # all read by the workers
    expected = oracle(blob, dtype=np.uint8)
    assert np.array_equal(got, expected) and mean == pytest.approx(expected.mean())
    assert len(stats) == 2 and all(s["header"] == 1 for s in stats)  # each opened it once
    # each tile read by one worker, in one request, if the open's 64 KiB did not hold it
    beyond = [(a, b) for a, b in frame_blocks(blob) if b > fixed["first_request"]]
    assert sum(s["requests"] for s in stats) == len(beyond)
    assert sum(s["bytes"] for s in stats) <= sum(b - a for a, b in beyond)

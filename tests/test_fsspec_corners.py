"""fsspec corners: caching layers over and under ``dicom::``, ``cat_ranges``, UPath, and
the persisted index's directory. Values against pydicom/highdicom on a local copy;
requests counted by the servers (or a counting proxy) on loopback."""

from __future__ import annotations

import io
import warnings

import fsspec
import highdicom as hd
import numpy as np
import pytest
from conftest import BUCKET, _s3_options
from oracle import reference_frames
from test_backends import REGION, SLIDE, TILES

import hdfsspec
from hdfsspec.testing import CountingFileSystem, ShapingProxy, build_slide

FRAMES = reference_frames(SLIDE)
FIRST = 64 * 1024  # the suite's first request (tests/conftest.py)
# fsspec's MMapCache (blockcache's) leaves the file it maps to the garbage collector
MMAP_FILE = "ignore:unclosed file <_io.BufferedRandom:ResourceWarning"


def _entries(proxy: ShapingProxy) -> list[tuple[str, str, int | None]]:
    """``(method, path without query, start)`` of each request the proxy saw."""
    return [(e[0], e[1].split("?")[0], e[2]) for e in proxy.log.entries]


@pytest.mark.filterwarnings(MMAP_FILE)
def test_blockcache_over_dicom_over_s3(s3_endpoint, tmp_path):
    """``blockcache::dicom::s3://``: its blocks come through the dicom filesystem; the
    file closes (blockcache gives it a cache without ``close``), frames are read through
    the frame-aware cache still, and a second open is served from the local blocks."""
    key = f"{BUCKET}/corners/blockcache.dcm"
    fsspec.filesystem("s3", **_s3_options(s3_endpoint)).pipe_file(key, SLIDE)
    url = f"blockcache::dicom::s3://{key}"
    with ShapingProxy(s3_endpoint) as proxy:
        options = {"s3": _s3_options(proxy.url), "blockcache": {"cache_storage": str(tmp_path)}}
        with fsspec.open(url, **options) as f:
            assert isinstance(f, hdfsspec.DicomFile)
            assert f.read() == SLIDE
            assert f.read_frames([63]) == FRAMES[63:]  # beyond the open's bytes: one GET
            frame_bytes = f.stats.phases["frames"].bytes
        assert f.closed
        # blockcache's HEAD (its key of the object), the dicom open's GET, blockcache's
        # one block (the whole object), the frame
        path = f"/{key}"
        assert _entries(proxy) == [
            ("HEAD", path, None),
            ("GET", path, 0),
            ("GET", path, 0),
            ("GET", path, _entries(proxy)[-1][2]),
        ]
        assert proxy.log.bytes == FIRST + len(SLIDE) + frame_bytes
        proxy.log.clear()
        with fsspec.open(url, **options) as f:  # complete in the cache: a local file
            assert f.read() == SLIDE
        assert proxy.log.entries == []


@pytest.mark.filterwarnings(MMAP_FILE)
def test_dicom_over_blockcache_over_http(http_server, tmp_path):
    """``dicom::blockcache::https://``: ``info`` is the target's (blockcache's own lists
    the parent directory, which an HTTP server has not); every range is served by
    blockcache's blocks, fetched once."""
    url = http_server.put("corners/blockcache.dcm", SLIDE)
    options = {"blockcache": {"cache_storage": str(tmp_path)}}
    http_server.log.clear()
    with fsspec.open("dicom::blockcache::" + url, **options) as f:
        assert f.read_frames([10, 63]) == [FRAMES[10], FRAMES[63]]
        assert (f.stats.requests, f.stats.rounds) == (2, 2)  # header, then the frames
        f.seek(0)
        assert f.read() == SLIDE
        # one GET: blockcache's block of the whole object (and a HEAD each for the info of
        # the dicom open and of blockcache's own)
        assert http_server.log.requests == 1
        assert f.size == len(SLIDE) == f.fs.info(f.path)["size"] == f.fs.size(f.path)
        assert f.fs.exists(f.path) and f.fs.isfile(f.path)  # (fsspec's HTTP: GETs)
    http_server.log.clear()
    with fsspec.open("dicom::blockcache::" + url, **options) as f:
        assert f.read_frames([10, 63]) == [FRAMES[10], FRAMES[63]]
    assert http_server.log.requests == 0  # from the local blocks (a HEAD for the size)


def test_cat_ranges_is_the_target_s_one_concurrent_round(s3_endpoint):
    target = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    key = f"{BUCKET}/corners/ranges.dcm"
    target.pipe_file(key, SLIDE)
    counting = CountingFileSystem(fs=target)
    fs = fsspec.filesystem("dicom", fs=counting, skip_instance_cache=True)
    starts = [0, 1000, 50_000, 120_000, 190_000]
    ends = [s + 500 for s in starts]
    got = fs.cat_ranges([f"dicom::s3://{key}"] * 5, starts, ends)
    assert got == [SLIDE[a:b] for a, b in zip(starts, ends, strict=True)]
    assert (counting.rounds, counting.requests) == (1, 5)  # one cat_ranges of the target
    assert counting.ranges == [(key, a, b) for a, b in zip(starts, ends, strict=True)]
    missing = fs.cat_ranges([key, f"{BUCKET}/corners/none.dcm"], [0, 0], [4, 4])
    assert missing[0] == SLIDE[:4] and isinstance(missing[1], FileNotFoundError)
    assert counting.rounds == 2
    with pytest.raises(FileNotFoundError):
        fs.cat_ranges([f"{BUCKET}/corners/none.dcm"], [0], [4], on_error="raise")


def test_a_dicom_upath(s3_endpoint):
    """``UPath("dicom::s3://...", s3={...})``: a DicomPath (no warning), whose names,
    parent and children are those of the S3 path, and which reads frame-aware."""
    from upath import UPath

    from hdfsspec.upath import DicomPath

    key = f"{BUCKET}/corners/upath/slide.dcm"
    fsspec.filesystem("s3", **_s3_options(s3_endpoint)).pipe_file(key, SLIDE)
    with ShapingProxy(s3_endpoint) as proxy:
        options = _s3_options(proxy.url)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            path = UPath(f"dicom::s3://{key}", s3=options, max_cache_bytes=2**22)
            parent = path.parent
        assert isinstance(path, DicomPath) and isinstance(parent, DicomPath)
        assert str(path) == f"dicom::s3://{key}" and path.path == key
        assert (path.name, path.stem, path.suffix) == ("slide.dcm", "slide", ".dcm")
        assert str(parent) == f"dicom::s3://{BUCKET}/corners/upath" and parent.name == "upath"
        assert str(parent / "slide.dcm") == str(path) and (parent / "x.dcm").name == "x.dcm"
        assert str(path.with_name("y.dcm")) == f"dicom::s3://{BUCKET}/corners/upath/y.dcm"
        assert [p.name for p in parent.iterdir()] == ["slide.dcm"]
        assert (parent / "slide.dcm").exists() and not (parent / "x.dcm").exists()
        child = parent / "slide.dcm"
        assert child.fs is path.fs and child.fs.options.max_cache_bytes == 2**22
        proxy.log.clear()
        with child.open("rb") as f:
            assert isinstance(f, hdfsspec.DicomFile)
            assert f.read_frames([63]) == FRAMES[63:]
        with hdfsspec.imread(path) as im:
            region = im.get_total_pixel_matrix(**REGION)
        assert np.array_equal(
            region, hd.imread(io.BytesIO(SLIDE)).get_total_pixel_matrix(**REGION)
        )
        # each open: one GET (no HEAD); then the frame, and the region's tiles in one GET
        assert [e[0] for e in _entries(proxy)] == ["GET"] * 4


def test_the_persisted_index_follows_xdg_cache_home(tmp_path, monkeypatch):
    """With no directory given, a file without offset table is walked once, its index
    saved under ``$XDG_CACHE_HOME/hdfsspec/index``, and a new filesystem's open of the
    object walks nothing."""
    monkeypatch.delenv("HDFSSPEC_INDEX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no real home touched, on any platform
    blob = build_slide(512, 512, tile=64, tiles=TILES, offset_table="empty")  # 64 tiles
    path = tmp_path / "scan.dcm"
    path.write_bytes(blob)

    def dicom() -> fsspec.AbstractFileSystem:
        return fsspec.filesystem("dicom", target_protocol="file", skip_instance_cache=True)

    with dicom().open(str(path)) as f:
        assert f.read_frames([60]) == reference_frames(blob)[60:61]
        assert f.index.offset_table == "scan"
        assert f.stats.phases["index"].requests >= 1  # the walk of the items
    store = dicom().index_store
    if not store.directory.is_relative_to(tmp_path / "xdg"):
        pytest.skip(f"this platform's cache directory is not XDG's: {store.directory}")
    assert store.directory == tmp_path / "xdg" / "hdfsspec" / "index"
    assert len(list(store.directory.glob("??/*.idx"))) == 1
    with dicom().open(str(path)) as f:
        assert f.read_frames([60]) == reference_frames(blob)[60:61]
        assert f.stats.phases["index"].requests == 0
    assert not (tmp_path / "home").exists()

"""The ``dicom`` filesystem as fsspec users drive it: URLs, chains, listing, pickling."""

from __future__ import annotations

import pickle

import fsspec
import pytest
from conftest import CORPUS
from fsspec.implementations.cached import SimpleCacheFileSystem
from fsspec.implementations.local import LocalFileSystem
from oracle import reference_frames

import hdfsspec
from hdfsspec import DicomFile, DicomFileSystem, ReadOnlyError

BLOB = CORPUS["eot.dcm"]
REF = reference_frames(BLOB)


@pytest.fixture
def memfile():
    fs = fsspec.filesystem("memory")
    fs.pipe("/fsdir/a.dcm", BLOB)
    fs.pipe("/fsdir/b.dcm", CORPUS["bot.dcm"])
    fs.pipe("/fsdir/sub/c.dcm", CORPUS["native_u16.dcm"])
    yield "/fsdir"
    fs.rm("/fsdir", recursive=True)


def test_url_to_fs_and_chain(memfile):
    fs, path = fsspec.core.url_to_fs("dicom::memory://fsdir/a.dcm")
    assert isinstance(fs, DicomFileSystem) and fs.target_protocol == "memory"
    assert path == "/fsdir/a.dcm"
    with fs.open(path) as f:
        assert f.read_frames([1, 4]) == [REF[1], REF[4]]


def test_chain_through_simplecache(memfile, tmp_path):
    url = "dicom::simplecache::memory://fsdir/a.dcm"
    with fsspec.open(url, simplecache={"cache_storage": str(tmp_path)}) as f:
        assert isinstance(f, DicomFile)
        assert f.read_frames([0, 11]) == [REF[0], REF[11]]


class _SimpleCacheBefore2026_9(SimpleCacheFileSystem):
    """simplecache with fsspec's ``cat_ranges`` as it was before 2026.9 (verbatim)."""

    _local_paths_for_ranges = None  # the fix's helper: absent before 2026.9

    def cat_ranges(self, paths, starts, ends, max_gap=None, on_error="return", **kwargs):
        lpaths = [self._check_file(p) for p in paths]
        rpaths = [p for l, p in zip(lpaths, paths) if l is False]  # noqa: E741, B905
        lpaths = [l for l, p in zip(lpaths, paths) if l is False]  # noqa: E741, B905
        self.fs.get(rpaths, lpaths)
        paths = [self._check_file(p) for p in paths]
        return LocalFileSystem().cat_ranges(
            paths, starts, ends, max_gap=max_gap, on_error=on_error, **kwargs
        )


def test_chain_through_simplecache_of_older_fsspec(memfile, tmp_path):
    """Its cat_ranges of a file not yet cached fails: the file is cached whole first."""
    target = _SimpleCacheBefore2026_9(
        target_protocol="memory", cache_storage=str(tmp_path), skip_instance_cache=True
    )
    (failed,) = target.cat_ranges(["/fsdir/b.dcm"], [0], [10])  # the bug itself
    assert isinstance(failed, AttributeError)
    fs = fsspec.filesystem("dicom", fs=target, skip_instance_cache=True, index_cache=False)
    with fs.open("/fsdir/a.dcm") as f:
        assert f.read_frames([0, 11]) == [REF[0], REF[11]]
        assert (f.stats.requests, f.stats.bytes) == (1, len(BLOB))  # the open's read held all
    assert len(list(tmp_path.iterdir())) == 1  # the object, cached once


def test_local_file_url_and_plain_path(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(BLOB)
    with fsspec.open(f"dicom::file://{path}") as f:
        assert f.read_frames([2]) == [REF[2]]
    with fsspec.open(f"dicom::{path}") as f:
        assert f.read_frames([3]) == [REF[3]]
    with fsspec.open(f"dicom://{path}") as f:  # no target: the local filesystem
        assert f.read_frames([5]) == [REF[5]]


def test_filesystem_constructors(memfile):
    target = fsspec.filesystem("memory")
    by_instance = fsspec.filesystem("dicom", fs=target)
    by_protocol = fsspec.filesystem("dicom", target_protocol="memory", target_options={})
    for fs in (by_instance, by_protocol):
        assert fs.read_frames("/fsdir/a.dcm", [6]) == [REF[6]]
    with pytest.raises(ValueError, match="either fs or target_protocol"):
        DicomFileSystem(fs=target, target_protocol="memory")


def test_listing_delegates_to_target(memfile):
    fs = fsspec.filesystem("dicom", target_protocol="memory")
    assert sorted(fs.ls("/fsdir", detail=False)) == ["/fsdir/a.dcm", "/fsdir/b.dcm", "/fsdir/sub"]
    assert fs.info("/fsdir/a.dcm")["size"] == len(BLOB)
    assert fs.size("dicom::/fsdir/a.dcm") == len(BLOB)
    assert fs.glob("/fsdir/*.dcm") == ["/fsdir/a.dcm", "/fsdir/b.dcm"]
    assert fs.find("/fsdir") == ["/fsdir/a.dcm", "/fsdir/b.dcm", "/fsdir/sub/c.dcm"]
    assert fs.exists("/fsdir/b.dcm") and not fs.exists("/fsdir/zz.dcm")
    assert fs.isdir("/fsdir/sub") and fs.isfile("/fsdir/sub/c.dcm")
    assert fs.cat_file("/fsdir/a.dcm", 128, 132) == b"DICM"
    target = fsspec.filesystem("memory")
    for path in ("/fsdir/", "fsdir", "memory://fsdir", "dicom::memory://fsdir/"):
        assert [r for r, _, _ in fs.walk(path)] == ["/fsdir", "/fsdir/sub"]
        assert fs.expand_path(path, recursive=True) == target.expand_path("/fsdir", True)
    for method in ("created", "checksum", "modified", "ukey"):
        try:
            expected = getattr(target, method)("/fsdir/a.dcm")
        except NotImplementedError:
            continue
        assert getattr(fs, method)("/fsdir/a.dcm") == expected, method


def test_delegated_methods_take_fsspec_arguments(memfile, tmp_path):
    """Arguments are bound as fsspec's AbstractFileSystem names them; ``ls`` gives details
    by default even where the target's does not (the local filesystem's)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.dcm").write_bytes(b"x")
    local = fsspec.filesystem("dicom", target_protocol="file", skip_instance_cache=True)
    assert fsspec.filesystem("file").ls(str(tmp_path)) == [str(tmp_path / "d")]  # names
    (entry,) = local.ls(f"dicom::file://{tmp_path}")
    assert entry["name"] == str(tmp_path / "d") and entry["type"] == "directory"
    assert local.ls(str(tmp_path), False) == [str(tmp_path / "d")]
    fs = fsspec.filesystem("dicom", target_protocol="memory")
    assert fs.find("/fsdir", 1) == ["/fsdir/a.dcm", "/fsdir/b.dcm"]  # maxdepth, positionally
    assert fs.find("/fsdir", 1, True) == ["/fsdir", "/fsdir/a.dcm", "/fsdir/b.dcm", "/fsdir/sub"]
    assert sorted(fs.find("/fsdir", detail=True)) == [
        "/fsdir/a.dcm",
        "/fsdir/b.dcm",
        "/fsdir/sub/c.dcm",
    ]
    assert fs.expand_path(("dicom::memory://fsdir/a.dcm", "/fsdir/b.dcm")) == [
        "/fsdir/a.dcm",
        "/fsdir/b.dcm",
    ]
    assert fs.cat_file("dicom::memory://fsdir/a.dcm", end=4) == BLOB[:4]
    with pytest.raises(FileNotFoundError):  # the target's error, unchanged
        fs.info("/fsdir/nope.dcm")
    with pytest.raises(TypeError):  # as fsspec's signature says
        fs.isdir("/fsdir", True)
    assert DicomFileSystem.info.__doc__ and DicomFileSystem.info.__name__ == "info"


def test_opening_a_directory_raises_is_a_directory(memfile, tmp_path):
    for url in ("dicom::memory://fsdir/sub", f"dicom::file://{tmp_path}"):
        with pytest.raises(IsADirectoryError):
            fsspec.open(url).open().read(10)


def test_open_files_with_glob(memfile):
    files = fsspec.open_files("dicom::memory://fsdir/*.dcm")
    assert [f.path for f in files] == ["/fsdir/a.dcm", "/fsdir/b.dcm"]
    for of, blob in zip(files, [BLOB, CORPUS["bot.dcm"]], strict=True):
        with of as f:
            assert f.read_frames([0]) == reference_frames(blob)[:1]


def test_missing_object_raises_backend_error(memfile):
    with pytest.raises(FileNotFoundError):
        fsspec.open("dicom::memory://fsdir/nope.dcm").open()


@pytest.mark.parametrize("mode", ["wb", "ab", "r+b", "xb"])
def test_read_only(memfile, mode):
    fs = fsspec.filesystem("dicom", target_protocol="memory")
    with pytest.raises(ReadOnlyError, match="read-only"):
        fs.open("/fsdir/a.dcm", mode)
    for call in (
        lambda: fs.rm("/fsdir/a.dcm"),
        lambda: fs.mkdir("/fsdir/new"),
        lambda: fs.pipe_file("/fsdir/a.dcm", b"x"),
        lambda: fs.touch("/fsdir/t"),
    ):
        with pytest.raises(ReadOnlyError):
            call()
    assert fsspec.filesystem("memory").cat("/fsdir/a.dcm") == BLOB  # nothing touched


def test_filesystem_and_open_file_pickle(memfile, tmp_path):
    path = tmp_path / "p.dcm"
    path.write_bytes(BLOB)
    fs = fsspec.filesystem("dicom", target_protocol="file", max_cache_bytes=2**20)
    fs2 = pickle.loads(pickle.dumps(fs))
    assert fs2.options.max_cache_bytes == 2**20
    with fs.open(str(path)) as f:
        assert f.read_frames([1]) == [REF[1]]
        f.seek(200)
        f2 = pickle.loads(pickle.dumps(f))
        assert isinstance(f2, DicomFile) and f2.tell() == 200
        assert f2.read(10) == BLOB[200:210]
        assert f2.read_frames([7]) == [REF[7]]
        f2.close()


def test_target_filesystem_is_not_closed(memfile):
    target = fsspec.filesystem("memory")
    fs = fsspec.filesystem("dicom", fs=target, skip_instance_cache=True)
    with fs.open("/fsdir/a.dcm") as f:
        f.read_frames([0])
    assert target.cat("/fsdir/b.dcm") == CORPUS["bot.dcm"]


def test_imread_accepts_urls_without_prefix(memfile):
    with hdfsspec.imread("memory://fsdir/sub/c.dcm") as im:
        assert im.number_of_frames == 5
    with hdfsspec.imread("dicom::memory://fsdir/sub/c.dcm") as im:
        assert im.number_of_frames == 5


def test_local_reads_import_no_cloud_client(tmp_path):
    """Opening and reading a local file imports neither s3fs, adlfs, the Azure SDK nor aiohttp.

    (They weigh about 30 MB of resident memory and a second of import time; a target of
    their kind exists only once they are imported, so nothing needs them to ask.)
    """
    import subprocess
    import sys

    from hdfsspec.testing import build_slide

    path = tmp_path / "local.dcm"
    path.write_bytes(build_slide(64, 96, tile=32, offset_table="empty"))
    code = (
        "import sys, fsspec, hdfsspec\n"
        f"with fsspec.open('dicom::file://{path.as_posix()}') as f:\n"
        "    assert len(f.read_frames([0, 5])) == 2\n"
        "with hdfsspec.imread('" + path.as_posix() + "') as im:\n"
        "    im.get_frame(1)\n"
        "print(sorted(m for m in ('s3fs', 'adlfs', 'azure', 'aiohttp', 'gcsfs') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr

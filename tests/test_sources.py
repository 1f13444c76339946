"""What names an object: any binary file object, and storage options that reach their layer.

File objects (``io.BytesIO``, a GCS ``BlobReader``, a ``smart_open`` file, a
``BufferedReader`` over a raw stream of one's own) are read through their ``seek`` and
``read``, frame-aware: the reads made on the object are counted by a wrapper of ours.
Storage options are given under any alias of a protocol, or flat; a key that no layer
takes is refused before any request. Values are compared with highdicom or pydicom
reading a local copy.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import highdicom as hd
import numpy as np
import pytest
from conftest import BUCKET, CORPUS, _az_options, _gcs_options, _s3_options
from oracle import reference_frames
from test_backends import REGION, SLIDE

import hdfsspec
from hdfsspec.testing import ShapingProxy

EXPECTED = hd.imread(io.BytesIO(SLIDE)).get_total_pixel_matrix(**REGION)
FIRST = 64 * 1024  # the suite's first request (tests/conftest.py)


class CountingReader(io.BufferedIOBase):
    """A binary file object over another one that records each ``read`` as
    ``(offset, bytes)``, and whether two reads ever ran at the same time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int]] = []
        self.overlapped = False
        self._busy = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.inner.seek(pos, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def read(self, size: int | None = -1) -> bytes:
        self.overlapped |= self._busy
        self._busy = True
        try:
            at = self.inner.tell()
            data = self.inner.read(size)
            time.sleep(0.001)  # a window for another thread's read to overlap, if it could
            self.reads.append((at, len(data)))
            return data
        finally:
            self._busy = False


class CountingRaw(io.RawIOBase):
    """A raw stream (not a file on disk) over bytes, recording each ``readinto``."""

    def __init__(self, blob: bytes) -> None:
        self._data = io.BytesIO(blob)
        self.reads: list[tuple[int, int]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._data.seek(pos, whence)

    def tell(self) -> int:
        return self._data.tell()

    def readinto(self, buffer: Any) -> int:
        at = self._data.tell()
        data = self._data.read(len(buffer))
        buffer[: len(data)] = data
        self.reads.append((at, len(data)))
        return len(data)


def _region_through(fileobj: CountingReader) -> np.ndarray:
    """A 3 x 3 tile region of SLIDE read through ``fileobj``: the open is one read (the
    header and offset table), the region one more (its tiles coalesced)."""
    with hdfsspec.imread(fileobj) as im:
        assert fileobj.reads == [(0, FIRST)]
        region = im.get_total_pixel_matrix(**REGION)
        assert len(fileobj.reads) == 2 == im.file.stats.requests
        assert im.file.stats.rounds == 2
        at, nbytes = fileobj.reads[1]
        assert at >= FIRST and nbytes < (len(SLIDE) - FIRST) // 4  # the region's tiles only
    return region


def test_a_bytesio_is_read_frame_aware_in_few_large_reads():
    ours = CountingReader(io.BytesIO(SLIDE))
    assert np.array_equal(_region_through(ours), EXPECTED)
    assert not ours.closed and not ours.inner.closed  # the caller's file is left open
    theirs = CountingReader(io.BytesIO(SLIDE))  # highdicom reading the same object itself
    region = hd.imread(theirs, lazy_frame_retrieval=True).get_total_pixel_matrix(**REGION)
    assert np.array_equal(region, EXPECTED) and len(theirs.reads) > 10 * len(ours.reads)


@pytest.mark.parametrize("name", ["bot.dcm", "empty_bot.dcm", "native_u16.dcm"])
def test_open_dicom_of_a_file_object_gives_pydicom_s_frames(name):
    blob = CORPUS[name]
    reader = CountingReader(io.BytesIO(blob))
    with hdfsspec.open_dicom(reader) as f:
        frames = f.read_frames(range(f.index.number_of_frames))
        stats = f.stats
    assert frames == reference_frames(blob)
    # every request is one read at most (requests that touch are one read)
    assert 1 <= len(reader.reads) <= stats.requests <= 3
    assert sum(n for _, n in reader.reads) <= stats.bytes <= len(blob) + FIRST
    assert not reader.closed


def test_a_buffered_reader_over_a_raw_stream():
    raw = CountingRaw(SLIDE)
    with io.BufferedReader(raw) as buffered:
        with hdfsspec.imread(buffered) as im:
            region = im.get_total_pixel_matrix(**REGION)
            requests = im.file.stats.requests
        assert not buffered.closed
    assert np.array_equal(region, EXPECTED)
    # a BufferedReader reads a large read as a refill of its buffer and one read of the rest
    assert requests == 2 and len(raw.reads) <= 2 * requests


def test_a_wrapper_of_one_s_own_with_read_seek_and_tell_only():
    class Minimal:
        def __init__(self, blob: bytes) -> None:
            self._data = io.BytesIO(blob)

        def read(self, size: int = -1) -> bytes:
            return self._data.read(size)

        def seek(self, pos: int, whence: int = 0) -> None:  # returns nothing
            self._data.seek(pos, whence)

        def tell(self) -> int:
            return self._data.tell()

    with hdfsspec.imread(Minimal(SLIDE)) as im:
        assert np.array_equal(im.get_total_pixel_matrix(**REGION), EXPECTED)
        assert im.file.stats.requests == 2 and "<Minimal>" in im.file.cache.path


def test_reads_of_a_file_object_from_threads_are_serial():
    reader = CountingReader(io.BytesIO(SLIDE))
    local = hd.imread(io.BytesIO(SLIDE))
    with hdfsspec.imread(reader) as im:
        batches = [[1, 2], [10, 20], [33, 40], [60, 64], [5, 50]]
        with ThreadPoolExecutor(5) as pool:
            got = list(pool.map(im.get_frames, batches))
        for frames, batch in zip(got, batches, strict=True):
            assert np.array_equal(frames, local.get_frames(batch))
        assert not reader.overlapped  # one read at a time, never two
        assert len(reader.reads) == im.file.stats.requests <= 1 + len(batches)


def test_what_a_file_object_must_be(tmp_path):
    path = tmp_path / "slide.dcm"
    path.write_bytes(SLIDE)

    class Unseekable(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            return 0

    with pytest.raises(ValueError, match="Unseekable cannot seek: frames are read at"):
        hdfsspec.imread(Unseekable())
    with open(path) as text, pytest.raises(TypeError, match=r"TextIOWrapper \(a file in text"):
        hdfsspec.imread(text)
    with pytest.raises(TypeError, match=r"TextIOWrapper \(a file in text"):
        hdfsspec.imread(io.TextIOWrapper(io.BytesIO(SLIDE)))
    closed = io.BytesIO(SLIDE)
    closed.close()
    with pytest.raises(ValueError, match=r"closed file \(BytesIO\)"):
        hdfsspec.imread(closed)
    with pytest.raises(TypeError, match="storage_options apply to a URL"):
        hdfsspec.imread(io.BytesIO(SLIDE), storage_options={"anon": True})

    class Texty:
        def __init__(self) -> None:
            self._text = io.StringIO(SLIDE.decode("latin-1"))

        def read(self, size: int = -1) -> str:
            return self._text.read(size)

        def seek(self, pos: int, whence: int = 0) -> int:
            return self._text.seek(pos, whence)

    with pytest.raises(TypeError, match=r"<Texty>: read\(\) returned str, not bytes"):
        hdfsspec.open_dicom(Texty()).header  # noqa: B018


def test_a_gcs_blob_reader(gcs_endpoint):
    """As highdicom's "Reading from Remote Filesystems" opens a GCS object."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    key = "blobreader/slide.dcm"
    fsspec.filesystem("gcs", **_gcs_options(gcs_endpoint)).pipe_file(f"{BUCKET}/{key}", SLIDE)
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_endpoint},
    )
    blob = client.bucket(BUCKET).blob(key)
    with blob.open("rb", chunk_size=256 * 1024) as reader:
        counted = CountingReader(reader)
        assert np.array_equal(_region_through(counted), EXPECTED)
        assert not reader.closed
    with blob.open("rb") as reader, hdfsspec.imread(reader) as im:  # unwrapped
        assert np.array_equal(
            im.get_frames([3, 9]), hd.imread(io.BytesIO(SLIDE)).get_frames([3, 9])
        )
    with blob.open("rb") as reader, hdfsspec.imread(reader, lazy_frame_retrieval=False) as im:
        assert np.array_equal(im.get_total_pixel_matrix(**REGION), EXPECTED)  # one read


def test_a_smart_open_file(s3_endpoint):
    import boto3
    import smart_open

    key = "smart-open/slide.dcm"
    fsspec.filesystem("s3", **_s3_options(s3_endpoint)).pipe_file(f"{BUCKET}/{key}", SLIDE)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    params = {"client": client}
    with smart_open.open(f"s3://{BUCKET}/{key}", "rb", transport_params=params) as f:
        counted = CountingReader(f)
        assert np.array_equal(_region_through(counted), EXPECTED)
        assert not f.closed
        with hdfsspec.imread(f) as im:  # unwrapped: named by the object's own name
            assert np.array_equal(im.get_total_pixel_matrix(**REGION), EXPECTED)
            assert im.file.path == f.name == key  # the object's own name, in messages


def test_an_s3fs_file_is_read_by_its_own_filesystem(s3_endpoint):
    """A file that names its filesystem (``.fs``, ``.path``): its filesystem's concurrent
    reads, with its credentials, not its ``read``."""
    target = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    target.pipe_file(f"{BUCKET}/s3file/slide.dcm", SLIDE)
    with target.open(f"{BUCKET}/s3file/slide.dcm") as handle:
        with hdfsspec.imread(handle) as im:
            assert im.file.fs.fs is target
            assert np.array_equal(im.get_total_pixel_matrix(**REGION), EXPECTED)
        assert handle.tell() == 0 and not handle.closed


# -- storage options: every alias of a protocol, flat options, and keys no layer takes -------


def _gcs_region(url: str, **kwargs: Any) -> np.ndarray:
    with hdfsspec.imread(url, **kwargs) as im:
        region = im.get_total_pixel_matrix(**REGION)
        stats = im.file.stats
        assert stats.phases["header"].requests == 1 and stats.rounds == 2
    return region


@pytest.mark.parametrize("key", ["gs", "gcs", "flat"])
def test_gcs_options_under_either_protocol_or_flat(gcs_endpoint, key):
    """``{"gcs": {...}}`` on a ``gs://`` URL reaches gcsfs (it used to stay with the dicom
    layer, and gcsfs went to Google's endpoint)."""
    options = _gcs_options(gcs_endpoint)
    path = f"{BUCKET}/options/{key}.dcm"
    fsspec.filesystem("gcs", **options).pipe_file(path, SLIDE)
    given = options if key == "flat" else {key: options, "max_cache_bytes": 2**22}
    for url in (f"gs://{path}", f"gcs://{path}"):
        assert np.array_equal(_gcs_region(url, storage_options=given), EXPECTED)
    # fsspec.open with the other alias than the URL's: the dicom layer hands it down
    other = "gcs" if key == "gs" else "gs"
    with fsspec.open(f"dicom::gs://{path}", **{other: options}) as f:
        assert f.read_frames([63]) == reference_frames(SLIDE)[63:]  # beyond the header
        assert f.stats.requests == 2


@pytest.mark.parametrize(("scheme", "key"), [("az", "abfs"), ("abfs", "az"), ("az", "abfss")])
def test_azure_options_under_any_alias(azure_connection, scheme, key):
    options = _az_options(azure_connection)
    path = f"{BUCKET}/options/{scheme}-{key}.dcm"
    fsspec.filesystem("az", **options).pipe_file(path, SLIDE)
    with hdfsspec.imread(f"{scheme}://{path}", storage_options={key: options}) as im:
        assert np.array_equal(im.get_total_pixel_matrix(**REGION), EXPECTED)
        assert im.file.stats.rounds == 2
    with hdfsspec.open_dicom(f"dicom::{scheme}://{path}", {"dicom": {}, key: options}) as f:
        assert f.read_frames([0, 63]) == [reference_frames(SLIDE)[k] for k in (0, 63)]


def test_s3_options_by_alias_flat_and_upath(s3_endpoint):
    """Each form reaches moto through a counting proxy: the values and the requests of a
    cold region (the open's GET, then one round for the region's ranges)."""
    from upath import UPath

    key = f"{BUCKET}/options/slide.dcm"
    fsspec.filesystem("s3", **_s3_options(s3_endpoint)).pipe_file(key, SLIDE)
    with ShapingProxy(s3_endpoint) as proxy:
        options = _s3_options(proxy.url)
        dicom_path = UPath(f"dicom::s3://{key}", s3=options)
        plain_path = UPath(f"s3://{key}", **options)
        forms: list[tuple[Any, Any]] = [
            (f"s3://{key}", {"s3a": options}),
            (f"s3a://{key}", {"s3": options}),
            (f"s3://{key}", options),  # flat: the single layer under dicom's
            (dicom_path, None),  # a UPath: its own filesystem
            (dicom_path.path, dicom_path.storage_options),
            (str(dicom_path), dicom_path.storage_options),
            (plain_path, None),
            (str(plain_path), plain_path.storage_options),
        ]
        for source, storage_options in forms:
            proxy.log.clear()
            with hdfsspec.imread(source, storage_options=storage_options) as im:
                region = im.get_total_pixel_matrix(**REGION)
                assert im.file.stats.rounds == 2
            assert np.array_equal(region, EXPECTED), source
            # the open's GET (header, offset table, size), then one GET of the tiles
            entries = [(e[0], e[1].split("?")[0], e[2]) for e in proxy.log.entries]
            assert entries == [("GET", f"/{key}", 0), ("GET", f"/{key}", entries[1][2])], source
            assert entries[1][2] >= FIRST


def test_a_key_no_layer_takes_is_refused_before_any_request(http_server, gcs_endpoint):
    url = http_server.put("refused.dcm", SLIDE)
    http_server.log.clear()
    with pytest.raises(TypeError, match=r"'s3' names a protocol that is not in 'dicom::http.*"):
        hdfsspec.imread(url, storage_options={"s3": {"anon": True}})
    with pytest.raises(TypeError, match=r"'http'/'https'.*max_cache_bytes"):  # the valid keys
        hdfsspec.imread(url, storage_options={"gcs": {}})
    with pytest.raises(TypeError, match="'anon' is taken by no layer of 'dicom::simplecache::"):
        hdfsspec.imread("simplecache::" + url, storage_options={"anon": True})
    with pytest.raises(TypeError, match=r"storage_options\['https'\] holds the options of"):
        hdfsspec.imread(url, storage_options={"https": True})
    with pytest.raises(TypeError, match="'s3' names a protocol that is not in 'dicom::http"):
        fsspec.open("dicom::" + url, s3={"anon": True}).open()
    with pytest.raises(TypeError, match="the target given as fs has its own"):
        fsspec.filesystem("dicom", fs=fsspec.filesystem("memory"), anon=True)
    assert http_server.log.entries == []  # not even a HEAD
    # gs:// with an s3 key (say, options shared by URLs of two stores): refused, no request
    with ShapingProxy(gcs_endpoint) as proxy:
        options = {**_gcs_options(proxy.url)}
        with pytest.raises(TypeError, match="'s3' names a protocol that is not in 'dicom::gs"):
            hdfsspec.imread(f"gs://{BUCKET}/x.dcm", storage_options={"gs": options, "s3": {}})
        assert proxy.log.entries == []


def test_options_of_a_chain_go_to_their_layers(http_server, tmp_path):
    """``dicom::simplecache::https://``: options under each protocol (or its alias), the
    first layer's named options flat, the dicom layer's top-level or under ``dicom``."""
    url = http_server.put("chain.dcm", SLIDE)
    options = {
        "simplecache": {"cache_storage": str(tmp_path / "a")},
        "https" if url.startswith("http:") else "http": {},
        "dicom": {"max_cache_bytes": 2**22},
        "first_request": 2**14,
    }
    with hdfsspec.open_dicom("simplecache::" + url, options) as f:
        assert f.fs.options.max_cache_bytes == 2**22 and f.fs.options.first_request == 2**14
        assert f.read_frames([7]) == reference_frames(SLIDE)[7:8]
    assert list((tmp_path / "a").iterdir())  # simplecache's storage was the one given
    flat = {"cache_storage": str(tmp_path / "b")}  # named by simplecache: its own
    with hdfsspec.open_dicom("simplecache::" + url, flat) as f:
        assert f.read_frames([7]) == reference_frames(SLIDE)[7:8]
    assert list((tmp_path / "b").iterdir())

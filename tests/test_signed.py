"""S3 reads through a URL signed once (hdfsspec.io.signed), against moto's server behind a proxy.

The proxy (no delay) logs every request on the wire: its path says whether a GET was
s3fs's (no query) or one of a presigned URL (a signature in the query). Each test
asserts the values, the requests and the bytes.
"""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from conftest import _s3_options
from fsspec.asyn import sync
from oracle import reference_frames

import hdfsspec
from hdfsspec.io import retry, signed
from hdfsspec.io.signed import POOL, proxied, timeouts
from hdfsspec.testing import ShapingProxy, build_slide, jpeg_tiles

TILES = jpeg_tiles(4, 64, 3)
SLIDE = build_slide(512, 512, tile=64, tiles=TILES)  # 8 x 8 tiles of a few KB
FRAMES = [3, 17, 40, 63]


@pytest.fixture
def proxy(s3_endpoint):
    with ShapingProxy(s3_endpoint, lifetime=300) as p:
        yield p


def _put(s3_endpoint: str, name: str, data: bytes, **kwargs) -> str:
    fs = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    path = f"hdfsspec-test/signed/{name}"
    fs.pipe_file(path, data, **kwargs)
    return path


def _dicom(proxy: ShapingProxy, **options) -> fsspec.AbstractFileSystem:
    target = {**_s3_options(proxy.url), **options.pop("target", {})}
    return fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options=target,
        skip_instance_cache=True,
        index_cache=False,
        first_request=4096,  # the header and table: frames are requests of their own
        **options,
    )


def _signed(entry) -> bool:
    return "Signature=" in entry[1]  # SigV2 ``Signature=`` or SigV4 ``X-Amz-Signature=``


def test_frames_after_the_open_are_read_by_a_signed_url(s3_endpoint, proxy):
    path = _put(s3_endpoint, "a.dcm", SLIDE)
    expected = reference_frames(SLIDE)
    with _dicom(proxy).open(path) as f:
        assert f.read_frames(FRAMES) == [expected[i] for i in FRAMES]
        gets = proxy.log.gets()
        # the open (size and ETag), the table and the frames: all by the signed URL
        assert all(_signed(e) for e in gets) and len(gets) > 1
        assert proxy.log.requests == len(gets) == f.stats.requests
        assert proxy.log.bytes == f.stats.bytes
        assert f._signed is not None and f._signed.active


def test_signed_urls_false_reads_every_range_through_s3fs(s3_endpoint, proxy):
    path = _put(s3_endpoint, "b.dcm", SLIDE)
    with _dicom(proxy, signed_urls=False).open(path) as f:
        assert f.read_frames(FRAMES) == [reference_frames(SLIDE)[i] for i in FRAMES]
        assert f._signed is None
        assert not any(_signed(e) for e in proxy.log.gets())
        assert proxy.log.requests == f.stats.requests and proxy.log.bytes == f.stats.bytes


@pytest.mark.parametrize("signed_urls", [True, False], ids=["signed", "s3fs"])
def test_an_object_replaced_while_open_raises_object_changed(s3_endpoint, proxy, signed_urls):
    """Signed reads send If-Match; s3fs's reads (``signed_urls=False``, and the ranges
    signed reads hand back after a failure) GetObject with IfMatch: before, those
    served the new object's bytes at the old offsets."""
    path = _put(s3_endpoint, f"c-{signed_urls}.dcm", SLIDE)
    changed = bytearray(SLIDE)
    changed[-100] ^= 0xFF  # a byte of the last tile: same size, only the ETag tells
    other = bytes(changed)
    with _dicom(proxy, signed_urls=signed_urls).open(path) as f:
        f.index  # noqa: B018
        requests = proxy.log.requests
        _put(s3_endpoint, f"c-{signed_urls}.dcm", other)
        with pytest.raises(hdfsspec.ObjectChangedError, match="ETag") as err:
            f.read_frames([20])
        assert err.value.path is not None and path in err.value.path
        assert err.value.offset == f.index.frame_range(20)[0]
        assert proxy.log.requests == requests + 1  # one GET, answered 412


def test_a_version_aware_target_reads_the_opened_version_once_replaced(s3_endpoint, proxy):
    """With ``version_aware=True`` s3fs's reads name the open's VersionId: the frames of
    the version opened, after another was written over it."""
    direct = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    bucket = "hdfsspec-versioned"
    if not direct.exists(bucket):
        direct.mkdir(bucket)
        direct.make_bucket_versioned(bucket)
    path = f"{bucket}/slide.dcm"
    direct.pipe_file(path, SLIDE)
    other = build_slide(512, 512, tile=64, tiles=jpeg_tiles(4, 64, 3, seed=9))
    expected = reference_frames(SLIDE)
    fs = _dicom(proxy, signed_urls=False, target={"version_aware": True})
    with fs.open(path) as f:
        assert f.read_frames([3]) == [expected[3]]
        direct.pipe_file(path, other)
        assert f.read_frames([20, 63]) == [expected[20], expected[63]]
        assert all("versionId=" in e[1] for e in proxy.log.gets()[1:])


def test_a_refused_url_is_signed_again_once(s3_endpoint, proxy):
    path = _put(s3_endpoint, "d.dcm", SLIDE)
    with _dicom(proxy).open(path) as f:
        f.index  # noqa: B018
        before = proxy.log.requests
        proxy.refuse = 1  # an expired URL: 403
        assert f.read_frames([9]) == [reference_frames(SLIDE)[9]]
        gets = proxy.log.gets()[before:]
        assert len(gets) == 2 and all(_signed(e) for e in gets)  # refused, then signed again
        assert f._signed.active


def test_refused_again_goes_back_to_s3fs_and_its_error(s3_endpoint, proxy):
    path = _put(s3_endpoint, "e.dcm", SLIDE)
    with _dicom(proxy).open(path) as f:
        f.index  # noqa: B018
        before = proxy.log.requests
        proxy.refuse = 3  # the URL, the URL signed again, then s3fs's own GET
        with pytest.raises(PermissionError):
            f.read_frames([9])
        gets = proxy.log.gets()[before:]
        assert [_signed(e) for e in gets][:2] == [True, True] and not _signed(gets[2])
        assert not f._signed.active
        # from now on s3fs reads, and the object is still read right
        assert f.read_frames([10]) == [reference_frames(SLIDE)[10]]
        assert not _signed(proxy.log.gets()[-1])


@pytest.mark.parametrize("status", [503, 500])
def test_a_transient_failure_is_read_again_on_the_url_then_by_s3fs(
    s3_endpoint, proxy, status, monkeypatch
):
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.001)  # the same rounds, without the waits
    path = _put(s3_endpoint, f"t{status}.dcm", SLIDE)
    expected = reference_frames(SLIDE)
    with _dicom(proxy).open(path) as f:
        f.index  # noqa: B018
        before = proxy.log.requests
        proxy.refuse, proxy.refuse_status = 1, status  # S3's 503 Slow Down, say
        assert f.read_frames([9]) == [expected[9]]
        gets = proxy.log.gets()[before:]
        assert [_signed(e) for e in gets] == [True, True]  # refused; read again on the URL
        assert f._signed.active and f._signed.transient_failures == 0
        assert f._signed.retries == 1
        before = proxy.log.requests
        proxy.refuse = retry.ATTEMPTS  # every attempt on the URL: then s3fs's GET
        assert f.read_frames([30]) == [expected[30]]
        gets = proxy.log.gets()[before:]
        assert [_signed(e) for e in gets] == [True] * retry.ATTEMPTS + [False]
        assert f._signed.active and f._signed.transient_failures == 1
        assert f.read_frames([31]) == [expected[31]]  # signed reads go on
        assert _signed(proxy.log.gets()[-1])
        for k in range(signed.TRANSIENT_LIMIT - 1):  # until too many batches had one
            proxy.refuse = retry.ATTEMPTS
            assert f.read_frames([40 + k]) == [expected[40 + k]]
        assert not f._signed.active
        assert f.read_frames([50]) == [expected[50]] and not _signed(proxy.log.gets()[-1])
        # the file counts each range once; the wire also saw the refused attempts
        refused = 1 + retry.ATTEMPTS * signed.TRANSIENT_LIMIT
        assert proxy.log.requests == f.stats.requests + refused
        assert proxy.log.bytes == f.stats.bytes


def test_anonymous_clients_read_the_plain_url(s3_endpoint, proxy):
    path = _put(s3_endpoint, "f.dcm", SLIDE, ACL="public-read")
    target = {"anon": True, "key": None, "secret": None}
    with _dicom(proxy, target=target).open(path) as f:
        assert f.read_frames(FRAMES) == [reference_frames(SLIDE)[i] for i in FRAMES]
        url = f._signed.url()
        assert "Signature" not in url and url.endswith(path)
        assert proxy.log.requests == f.stats.requests and proxy.log.bytes == f.stats.bytes


@pytest.mark.parametrize(
    "target",
    [{"requester_pays": True}, {"s3_additional_kwargs": {"ServerSideEncryption": "AES256"}}],
)
def test_requests_a_presigned_url_cannot_carry_stay_with_s3fs(s3_endpoint, proxy, target):
    path = _put(s3_endpoint, "g.dcm", SLIDE)
    with _dicom(proxy, target=target).open(path) as f:
        assert f._signed is None
        assert f.read_frames([5]) == [reference_frames(SLIDE)[5]]
        assert not any(_signed(e) for e in proxy.log.gets())


def test_only_s3_targets_are_signed(tmp_path):
    (tmp_path / "x.dcm").write_bytes(SLIDE)
    with fsspec.filesystem("dicom", index_cache=False).open(str(tmp_path / "x.dcm")) as f:
        assert f._signed is None
        assert f.read_frames([5]) == [reference_frames(SLIDE)[5]]


def test_a_proxy_in_the_environment_sends_reads_to_s3fs(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    url = "https://bucket.s3.amazonaws.com/x.dcm?X-Amz-Signature=1"
    assert not proxied(url)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert proxied(url)
    assert not proxied("http://127.0.0.1:5000/b/x.dcm")  # http: not proxied
    monkeypatch.setenv("NO_PROXY", "amazonaws.com")
    assert not proxied(url)


def test_a_region_over_s3_is_one_round_trip_of_one_range_per_row(s3_endpoint, proxy):
    """One round trip, one range per row of tiles."""
    path = _put(s3_endpoint, "h.dcm", SLIDE)
    region = {"row_start": 100, "row_end": 228, "column_start": 40, "column_end": 168}
    with hdfsspec.imread(_dicom(proxy).open(path)) as im:
        im.file.index  # noqa: B018  (the table: not part of the region's cost)
        rounds, before = im.file.stats.rounds, proxy.log.requests
        got = im.get_total_pixel_matrix(**region)
        assert im.file.stats.rounds == rounds + 1
        assert proxy.log.requests - before == 3  # rows 1-3 of tiles 0-2, one range each
        assert im.file.stats.requests == proxy.log.requests
    local = hdfsspec.imread(_local(SLIDE))
    np.testing.assert_array_equal(got, local.get_total_pixel_matrix(**region))


def _local(blob: bytes):
    fs = fsspec.filesystem("memory")
    fs.pipe("/signed-local.dcm", blob)
    return fs.unstrip_protocol("/signed-local.dcm")


def test_signed_reads_wait_no_longer_than_botocore_would(s3_endpoint):
    fs = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    assert timeouts(fs) == (5.0, 15.0)  # s3fs's defaults
    tuned = fsspec.filesystem(
        "s3", **_s3_options(s3_endpoint), config_kwargs={"read_timeout": 2, "connect_timeout": 1}
    )
    assert timeouts(tuned) == (1.0, 2.0)
    dicom = fsspec.filesystem("dicom", fs=tuned, skip_instance_cache=True, index_cache=False)
    http = dicom._http_fs()
    session = sync(http.loop, http.set_session)
    assert session.timeout.sock_read == 2.0 and session.timeout.sock_connect == 1.0
    assert session.connector.limit == POOL


def test_which_failures_are_transient():
    import asyncio

    import aiohttp

    def response_error(status):
        return aiohttp.ClientResponseError(None, (), status=status)  # type: ignore[arg-type]

    transient = signed._transient
    assert transient(response_error(503)) and transient(response_error(500))
    assert transient(aiohttp.ServerDisconnectedError()) and transient(asyncio.TimeoutError())
    assert not transient(response_error(403)) and not transient(response_error(404))
    assert not transient(FileNotFoundError("gone")) and not transient(b"data")

"""The first GET of an S3 object through a presigned URL (hdfsspec.io.signed_first), against
moto's server behind a logging proxy: the same info, bytes and identity as s3fs's
``GetObject``, and s3fs's own answer wherever the signed GET does not answer.

The benefit (no aiobotocore session built on the first read of a process) is measured in
``benchmarks/`` (the first region of a new process)."""

from __future__ import annotations

import fsspec
import pytest
from conftest import _s3_options
from oracle import reference_frames
from test_signed import FRAMES, SLIDE, _dicom, _put, _signed

from hdfsspec.io.first_read import first_read
from hdfsspec.testing import RangeHTTPServer, ShapingProxy


@pytest.fixture
def proxy(s3_endpoint):
    with ShapingProxy(s3_endpoint, lifetime=300) as p:
        yield p


def _target(proxy: ShapingProxy) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3", **_s3_options(proxy.url))


def _http(dicom: fsspec.AbstractFileSystem):
    http = dicom.signed_http()
    assert http is not None
    return http


def test_the_first_read_is_signed_and_says_what_s3fs_says(s3_endpoint, proxy):
    path = _put(s3_endpoint, "first.dcm", SLIDE)
    target = _target(proxy)
    info, data, tail = first_read(target, path, 4096, 0, _http(_dicom(proxy)))
    assert data == SLIDE[:4096] and tail is None
    (entry,) = proxy.log.gets()
    assert _signed(entry) and proxy.log.bytes == 4096
    theirs = target.info(path)  # a HEAD: its keys, for the same object
    assert info["size"] == theirs["size"] == len(SLIDE)
    assert info["ETag"] == theirs["ETag"] and info["name"] == path and info["type"] == "file"
    assert info["LastModified"] == theirs["LastModified"]  # a datetime, as botocore parses it


def test_the_end_comes_signed_in_the_same_round(s3_endpoint, proxy):
    path = _put(s3_endpoint, "tail.dcm", SLIDE)
    info, data, tail = first_read(_target(proxy), path, 4096, 8192, _http(_dicom(proxy)))
    assert data == SLIDE[:4096] and info["size"] == len(SLIDE)
    assert tail == (len(SLIDE) - 8192, SLIDE[-8192:])
    gets = proxy.log.gets()
    assert len(gets) == 2 and all(_signed(e) for e in gets)
    assert proxy.log.bytes == 4096 + 8192


def test_a_whole_open_and_its_frames_go_by_signed_urls_only(s3_endpoint, proxy):
    path = _put(s3_endpoint, "whole.dcm", SLIDE)
    expected = reference_frames(SLIDE)
    with _dicom(proxy, warm=False).open(path) as f:
        assert f.read_frames(FRAMES) == [expected[i] for i in FRAMES]
        gets = proxy.log.gets()
        assert all(_signed(e) for e in gets)
        assert proxy.log.requests == len(gets) == f.stats.requests
        assert proxy.log.bytes == f.stats.bytes


@pytest.mark.parametrize("status", [403, 503])
def test_a_refused_signed_first_read_is_made_again_by_s3fs(s3_endpoint, proxy, status):
    path = _put(s3_endpoint, f"refused-{status}.dcm", SLIDE)
    proxy.refuse, proxy.refuse_status = 1, status
    info, data, _ = first_read(_target(proxy), path, 4096, 0, _http(_dicom(proxy)))
    assert data == SLIDE[:4096] and info["size"] == len(SLIDE)
    first, second = proxy.log.entries  # the refused signed GET, then s3fs's GetObject
    assert _signed(first) and not _signed(second)
    assert proxy.log.requests == 2 and proxy.log.bytes == 4096


def test_a_missing_object_raises_s3fs_s_error(s3_endpoint, proxy):
    with pytest.raises(FileNotFoundError):
        first_read(_target(proxy), "hdfsspec-test/signed/none.dcm", 4096, 0, _http(_dicom(proxy)))
    gets = proxy.log.gets()
    assert [_signed(e) for e in gets][:2] == [True, False]  # then s3fs's, which says it


@pytest.mark.parametrize("ignored", [False, True], ids=["ranged", "range ignored"])
def test_only_a_ranged_answer_is_taken(proxy, ignored):
    """A server that answers the whole object (200: the range ignored) is not taken, as
    an error is not (the caller then reads through s3fs); a 206 gives its range, the
    headers named as ``GetObject`` names them."""
    from fsspec.asyn import sync

    from hdfsspec.io import signed_first

    blob = bytes(range(256)) * 64
    http = _http(_dicom(proxy))()
    with RangeHTTPServer({"x.dcm": blob}, ignore_range=ignored) as server:
        session = sync(http.loop, http.set_session)
        got = sync(http.loop, signed_first._get, session, server.url("x.dcm"), "bytes=0-99")
        (entry,) = server.log.gets()
    if ignored:
        assert got is None
        return
    fields, data = got
    assert data == blob[:100]
    assert fields["ContentRange"] == f"bytes 0-99/{len(blob)}" and fields["ETag"]
    assert entry[2:4] == (0, 100)  # the range asked for, and no more


def test_signed_urls_false_reads_first_through_s3fs(s3_endpoint, proxy):
    path = _put(s3_endpoint, "unsigned.dcm", SLIDE)
    dicom = _dicom(proxy, signed_urls=False)
    assert dicom.signed_http() is None
    with dicom.open(path) as f:
        assert f.read_frames(FRAMES[:1]) == [reference_frames(SLIDE)[FRAMES[0]]]
        assert proxy.log.requests == f.stats.requests and proxy.log.bytes == f.stats.bytes
    assert not any(_signed(e) for e in proxy.log.gets())


def test_a_versioned_path_is_read_first_by_s3fs(s3_endpoint, proxy):
    path = _put(s3_endpoint, "versioned.dcm", SLIDE)
    target = fsspec.filesystem("s3", version_aware=True, **_s3_options(proxy.url))
    with pytest.raises(FileNotFoundError):  # no such version: s3fs's error
        first_read(target, f"{path}?versionId=abc", 4096, 0, _http(_dicom(proxy)))
    gets = proxy.log.gets()
    assert gets and not any(_signed(e) for e in gets)  # s3fs's GetObject, with its VersionId


@pytest.mark.parametrize("name", ["with space.dcm", "plus+sign.dcm", "accent-é.dcm", "a%2Fb.dcm"])
def test_a_key_that_needs_quoting_is_read_signed_as_signed(s3_endpoint, proxy, name):
    """The URL is sent exactly as signed (not quoted again): one signed GET."""
    path = _put(s3_endpoint, name, SLIDE)
    info, data, _ = first_read(_target(proxy), path, 4096, 0, _http(_dicom(proxy)))
    assert data == SLIDE[:4096] and info["size"] == len(SLIDE)
    (entry,) = proxy.log.entries
    assert _signed(entry) and proxy.log.bytes == 4096

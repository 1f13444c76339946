"""No signed URL, token or credential in log records, exceptions or reprs (hdfsspec.io.redact).

Signed S3 reads against moto's server behind the shaping proxy (as in test_signed.py),
with every log record at DEBUG captured on the root logger: records of botocore (its
own logs of the signed request headers, which the issue leaves aside) and of the test
servers running in this process (werkzeug for moto, the proxy) are not the client's.
Each read test asserts the values read too.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec
import pytest
from conftest import _s3_options
from oracle import reference_frames

import hdfsspec
from hdfsspec.io import redact
from hdfsspec.io.redact import RedactingFilter, install, leaks, redact_url, scrub
from hdfsspec.testing import ShapingProxy, build_slide, jpeg_tiles

KEY = "AKIAREDACTIONTEST777"
SECRET = "redaction-secret-7e1f0c9b2d"
SLIDE = build_slide(256, 256, tile=64, tiles=jpeg_tiles(4, 64, 3, seed=5))  # 4 x 4 tiles
EXPECTED = reference_frames(SLIDE)
SERVERS = ("botocore.", "werkzeug")
"""Loggers that are not the client's HTTP path: botocore's own (allowed by the issue),
and the servers of the test running in this process."""
_UNREDACTED = re.compile(
    r"(?i)(signature|credential|security-token|accesskeyid|googleaccessid|sig)=(?!REDACTED)"
)


# -- helpers --------------------------------------------------------------------------
@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[ShapingProxy]:
    with ShapingProxy(s3_endpoint, lifetime=300) as p:
        yield p


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record at DEBUG that reaches the root logger (caplog's handler is on it);
    read ``records.records`` after the fact (caplog keeps one list per test phase)."""
    caplog.set_level(logging.DEBUG)
    for name in ("fsspec", "fsspec.http", "fsspec.asyn", "aiohttp.client", "s3fs", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)  # in case a library set a level
    return caplog


def _options(endpoint: str, v4: bool) -> dict[str, Any]:
    options = {**_s3_options(endpoint), "key": KEY, "secret": SECRET}
    if v4:
        options["config_kwargs"] = {"signature_version": "s3v4"}
    return options


def _put(s3_endpoint: str, name: str, data: bytes) -> str:
    path = f"hdfsspec-test/redaction/{name}"
    fsspec.filesystem("s3", **_options(s3_endpoint, False)).pipe_file(path, data)
    return path


def _dicom(proxy: ShapingProxy, v4: bool = False) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options=_options(proxy.url, v4),
        skip_instance_cache=True,
        index_cache=False,
        first_request=4096,  # the header and table: frames are requests of their own
    )


def _secrets(url: str) -> list[str]:
    """The credentials used, and those a presigned URL carries (as written and decoded)."""
    names = ("signature", "credential", "security-token", "accesskeyid")
    values = []
    for part in urlsplit(url).query.split("&"):
        name, _, value = part.partition("=")
        if any(n in name.lower() for n in names):
            values += [value, unquote(value)]
    assert values  # the URL is signed
    return [KEY, SECRET, *values]


def _clean(text: str, secrets: list[str]) -> None:
    """Assert that ``text`` holds no secret and no unredacted signing parameter."""
    found = [s for s in secrets if s in text]
    assert not found, f"{found} in {text!r}"
    assert not _UNREDACTED.search(text), text
    assert "Signature=" not in text.replace("Signature=REDACTED", "")
    assert "X-Amz-Credential" not in text.replace("X-Amz-Credential=REDACTED", "")


def _client_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if not r.name.startswith(SERVERS)]


def _assert_no_secret_logged(caplog: pytest.LogCaptureFixture, secrets: list[str]) -> None:
    client = _client_records(caplog.records)
    assert any(r.name == "fsspec.http" for r in client)  # the signed GETs were logged
    formatter = logging.Formatter("%(name)s %(message)s")
    for record in client:
        _clean(formatter.format(record), secrets)  # with its exception's traceback


def _assert_no_secret_in_error(error: BaseException, secrets: list[str]) -> None:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    for e in [error, *redact._chain(error)]:
        _clean(f"{e}\n{e!r}\n{e.args!r}", secrets)
    _clean(text, secrets)


def _assert_no_secret_in_reprs(f: Any, fs: Any, secrets: list[str]) -> None:
    objects = [f, fs, fs.fs, f.cache, f._signed, f.stats, fs._http_fs()]
    for obj in objects:
        _clean(f"{obj!r} {obj!s}", secrets)


# -- reads through moto --------------------------------------------------------------------
@pytest.mark.parametrize("v4", [False, True], ids=["sigv2", "sigv4"])
def test_signed_reads_log_no_signature(s3_endpoint, proxy, records, v4):
    path = _put(s3_endpoint, f"read-{v4}.dcm", SLIDE)
    fs = _dicom(proxy, v4)
    with fs.open(path) as f:
        assert f.read_frames([1, 7, 14]) == [EXPECTED[1], EXPECTED[7], EXPECTED[14]]
        assert [i for i, _ in f.iter_frames()] == list(range(16))
        url = f._signed.url()
        assert ("X-Amz-Signature=" if v4 else "&Signature=") in url  # what was sent
        assert all("Signature=" in e[1] for e in proxy.log.gets()[1:])
        secrets = _secrets(url)
        _assert_no_secret_in_reprs(f, fs, secrets)
    _assert_no_secret_logged(records, secrets)
    # the URLs are logged, with the object's host and path kept
    logged = [r.getMessage() for r in records.records if r.name == "fsspec.http"]
    assert any(path in m and "Signature=REDACTED" in m for m in logged)


def test_a_replaced_object_raises_object_changed_without_the_url(s3_endpoint, proxy, records):
    path = _put(s3_endpoint, "replaced.dcm", SLIDE)
    changed = bytearray(SLIDE)
    changed[-100] ^= 0xFF  # same size: only the ETag tells
    fs = _dicom(proxy)
    with fs.open(path) as f:
        assert f.read_frames([0]) == [EXPECTED[0]]
        secrets = _secrets(f._signed.url())
        _put(s3_endpoint, "replaced.dcm", bytes(changed))
        with pytest.raises(hdfsspec.ObjectChangedError, match="ETag") as err:
            f.read_frames([9])
        assert err.value.path == f"s3://{path}" and err.value.offset == f.index.frame_range(9)[0]
        assert proxy.log.gets()[-1][1].count("Signature=") == 1  # the 412 was a signed GET
        _assert_no_secret_in_error(err.value, secrets)
        _assert_no_secret_in_reprs(f, fs, secrets)
    _assert_no_secret_logged(records, secrets)


def test_a_refused_signature_is_signed_again_or_read_by_s3fs(s3_endpoint, proxy, records):
    path = _put(s3_endpoint, "expired.dcm", SLIDE)
    fs = _dicom(proxy, v4=True)
    with fs.open(path) as f:
        assert f.read_frames([2]) == [EXPECTED[2]]
        secrets = _secrets(f._signed.url())
        proxy.refuse = 1  # expired: 403, then signed again
        assert f.read_frames([3]) == [EXPECTED[3]]
        secrets += _secrets(f._signed.url())  # the new URL's signature too
        proxy.refuse = 3  # the URL, the URL signed again, then s3fs's GET
        with pytest.raises(PermissionError) as err:
            f.read_frames([4])
        _assert_no_secret_in_error(err.value, secrets)
        assert f.read_frames([5]) == [EXPECTED[5]]  # s3fs from now on
        _assert_no_secret_in_reprs(f, fs, secrets)
    _assert_no_secret_logged(records, secrets)


def test_a_server_error_and_a_missing_object(s3_endpoint, proxy, records):
    path = _put(s3_endpoint, "gone.dcm", SLIDE)
    fs = _dicom(proxy)
    with fs.open(path) as f:
        assert f.read_frames([6]) == [EXPECTED[6]]
        secrets = _secrets(f._signed.url())
        proxy.refuse, proxy.refuse_status = 1, 503  # Slow Down: s3fs reads that range
        assert f.read_frames([8]) == [EXPECTED[8]]
        assert f._signed.active  # a transient failure: signed reads go on
        fsspec.filesystem("s3", **_options(s3_endpoint, False)).rm(path)
        with pytest.raises(FileNotFoundError) as err:
            f.read_frames([10])
        _assert_no_secret_in_error(err.value, secrets)
        _assert_no_secret_in_reprs(f, fs, secrets)
    _assert_no_secret_logged(records, secrets)


@pytest.mark.parametrize("status", [403, 404, 500])
def test_an_error_of_the_http_layer_reaching_the_file_is_redacted(
    s3_endpoint, proxy, records, monkeypatch, status
):
    """Whatever the signed reader lets through (here fsspec's HTTP filesystem made to
    raise, as a change of the failure handling might) reaches the caller redacted:
    aiohttp's ``ClientResponseError`` (its message and ``request_info`` name the URL)
    and fsspec's ``FileNotFoundError(url)``, of the same type and status, raised or as
    the cause of the error the file raises."""
    path = _put(s3_endpoint, f"raised-{status}.dcm", SLIDE)
    fs = _dicom(proxy, v4=True)
    with fs.open(path) as f:
        assert f.read_frames([11]) == [EXPECTED[11]]
        secrets = _secrets(f._signed.url())
        http = fs._http_fs()
        raising = http.cat_ranges
        monkeypatch.setattr(
            http, "cat_ranges", lambda *a, **k: raising(*a, **{**k, "on_error": "raise"})
        )
        proxy.refuse, proxy.refuse_status = 1, status
        with pytest.raises(OSError if status == 404 else Exception) as err:
            f.read_frames([12])
        # the error, or the cause of what the file made of it (a 5xx that outlasted the
        # retries is a TransportError), is still fsspec's or aiohttp's, with its status
        chain = redact._chain(err.value)
        if status == 404:
            assert any(type(e) is FileNotFoundError for e in chain)
        else:
            kinds = {type(_response_error(status))}
            assert any(type(e) in kinds and getattr(e, "status", 0) == status for e in chain)
        assert path in str(err.value)  # the object is still named
        _assert_no_secret_in_error(err.value, secrets)
        monkeypatch.undo()
        assert f.read_frames([13]) == [EXPECTED[13]]
    _assert_no_secret_logged(records, secrets)


def test_a_presigned_http_url_is_redacted_in_logs_and_errors(http_server, records):
    """A presigned URL given as the object (an HTTP target): fsspec.http's records and
    the path our errors name keep its host and path only."""
    signature, credential = "0f3c5e7a9b1d" * 4, f"{KEY}%2F20240101%2Fus-east-1%2Fs3"
    query = f"?X-Amz-Credential={credential}&X-Amz-Expires=60&X-Amz-Signature={signature}"
    dicom = http_server.put("redaction/slide.dcm", SLIDE) + query
    not_dicom = http_server.put("redaction/other.bin", b"\0" * 4096) + query
    secrets = [KEY, signature, credential]
    fs = fsspec.filesystem("dicom", target_protocol="http", skip_instance_cache=True)
    with fs.open(dicom) as f:
        assert f.read_frames([0, 15]) == [EXPECTED[0], EXPECTED[15]]
    with pytest.raises(hdfsspec.NotDicomError) as err, fs.open(not_dicom) as f:
        f.header  # noqa: B018
    assert err.value.path is not None and "redaction/other.bin" in err.value.path
    _assert_no_secret_in_error(err.value, secrets)
    _assert_no_secret_logged(records, secrets)


# -- the logging filter -------------------------------------------------------------------
def test_install_is_idempotent_and_changes_no_level_or_handler():
    loggers = [logging.getLogger(n) for n in redact.LOGGERS]
    before = [(lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    install()
    install()
    for lg, state in zip(loggers, before, strict=True):
        assert sum(isinstance(f, RedactingFilter) for f in lg.filters) == 1
        assert (lg.level, list(lg.handlers), lg.propagate) == state


def test_the_filter_rewrites_message_arguments_and_tracebacks():
    url = "https://b.s3.amazonaws.com/k.dcm?X-Amz-Credential=AKIA1%2Fx&X-Amz-Signature=beef"
    record = logging.LogRecord("fsspec.http", logging.DEBUG, __file__, 1, "GET %s", (url,), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == (
        "GET https://b.s3.amazonaws.com/k.dcm?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"
    )
    try:
        raise FileNotFoundError(url)
    except FileNotFoundError:
        failed = logging.LogRecord(
            "fsspec.asyn", logging.DEBUG, __file__, 1, "failed", (), sys.exc_info()
        )
    assert RedactingFilter().filter(failed)
    text = logging.Formatter().format(failed)
    assert "beef" not in text and "AKIA1" not in text
    assert "FileNotFoundError" in text and "k.dcm" in text
    plain = logging.LogRecord("aiohttp.client", logging.DEBUG, __file__, 1, "ok %d%%", (5,), None)
    assert RedactingFilter().filter(plain) and plain.msg == "ok %d%%" and plain.args == (5,)


def test_a_record_of_fsspec_http_reaches_handlers_redacted(caplog):
    install()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("fsspec.http").debug("https://h/p.dcm?sig=c2VjcmV0&sv=2021-08-06")
    assert caplog.records[-1].getMessage() == "https://h/p.dcm?sig=REDACTED&sv=2021-08-06"


# -- redact_url ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (  # S3, SigV2 (query string authentication)
            "https://b.s3.amazonaws.com/dir/x.dcm?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE"
            "&Expires=1700000000&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
            "https://b.s3.amazonaws.com/dir/x.dcm?AWSAccessKeyId=REDACTED"
            "&Expires=1700000000&Signature=REDACTED",
        ),
        (  # S3, SigV4 with a session token
            "https://b.s3.us-east-1.amazonaws.com/x.dcm?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
            "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjE%2F%2F%2F&X-Amz-Signature=aeeed9bbccd4d02ee5",
            "https://b.s3.us-east-1.amazonaws.com/x.dcm?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=REDACTED&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600"
            "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED",
        ),
        (  # S3, lower-case token as some SDKs write it
            "http://127.0.0.1:9000/b/x.dcm?x-amz-security-token=FwoGZXIvYXdz&x-id=GetObject",
            "http://127.0.0.1:9000/b/x.dcm?x-amz-security-token=REDACTED&x-id=GetObject",
        ),
        (  # GCS, V4 signing
            "https://storage.googleapis.com/b/o.dcm?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20240101%2Fauto%2Fstorage"
            "%2Fgoog4_request&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900"
            "&X-Goog-SignedHeaders=host&X-Goog-Signature=5d4f2e1a0b",
            "https://storage.googleapis.com/b/o.dcm?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Credential=REDACTED&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900"
            "&X-Goog-SignedHeaders=host&X-Goog-Signature=REDACTED",
        ),
        (  # GCS, V2 signing
            "https://storage.googleapis.com/b/o.dcm?GoogleAccessId=sa@p.iam.gserviceaccount.com"
            "&Expires=1700000000&Signature=BCTFtG%2B%2Fc9R%3D",
            "https://storage.googleapis.com/b/o.dcm?GoogleAccessId=REDACTED"
            "&Expires=1700000000&Signature=REDACTED",
        ),
        (  # GCS with an OAuth token in the query
            "https://storage.googleapis.com/download/storage/v1/b/b/o/o.dcm?alt=media"
            "&access_token=ya29.a0AfH6SMB",
            "https://storage.googleapis.com/download/storage/v1/b/b/o/o.dcm?alt=media"
            "&access_token=REDACTED",
        ),
        (  # Azure, a service SAS: expiry, permissions and version stay readable
            "https://acct.blob.core.windows.net/c/o.dcm?sv=2021-08-06&ss=b&srt=o&sp=r"
            "&se=2024-01-01T00:00:00Z&st=2023-12-31T00:00:00Z&spr=https"
            "&sig=XnW2d%2Bm1s%2FKz%3D",
            "https://acct.blob.core.windows.net/c/o.dcm?sv=2021-08-06&ss=b&srt=o&sp=r"
            "&se=2024-01-01T00:00:00Z&st=2023-12-31T00:00:00Z&spr=https&sig=REDACTED",
        ),
        (  # a token parameter, and a password in the user info
            "https://user:hunter2@h.example/o.dcm?token=abc123&frame=3",
            "https://REDACTED@h.example/o.dcm?token=REDACTED&frame=3",
        ),
        ("s3://bucket/key/x.dcm", "s3://bucket/key/x.dcm"),  # nothing to redact
        ("https://h/o.dcm?partNumber=1&versionId=3", "https://h/o.dcm?partNumber=1&versionId=3"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # twice changes nothing


def test_redact_url_in_messages_and_reprs():
    url = "https://h/o.dcm?X-Amz-Signature=abc&X-Amz-Expires=60"
    assert redact_url(f"403, message='Forbidden', url='{url}'") == (
        "403, message='Forbidden', url='https://h/o.dcm?X-Amz-Signature=REDACTED&X-Amz-Expires=60'"
    )
    assert redact_url(f"URL('{url}')").endswith("?X-Amz-Signature=REDACTED&X-Amz-Expires=60')")
    quoted = redact_url(f"GET {url.replace('?', '%3F').replace('&', '%26').replace('=', '%3D')}")
    assert "abc" not in quoted
    options = {"key": KEY, "secret": SECRET, "token": "t0k", "Key": "x.dcm", "anon": False}
    assert redact_url(repr(options)) == (
        "{'key': 'REDACTED', 'secret': 'REDACTED', 'token': 'REDACTED', 'Key': 'x.dcm', "
        "'anon': False}"
    )
    assert redact_url(f"S3FileSystem(key='{KEY}', secret=\"{SECRET}\")") == (
        "S3FileSystem(key='REDACTED', secret=\"REDACTED\")"
    )
    connection = f"AccountName=devstoreaccount1;AccountKey={SECRET}==;BlobEndpoint=http://h:1/a;"
    assert redact_url(connection) == (
        "AccountName=devstoreaccount1;AccountKey=REDACTED;BlobEndpoint=http://h:1/a;"
    )
    assert redact_url("Authorization: Bearer ya29.a0AfH6SMBx") == "Authorization: Bearer REDACTED"
    assert redact_url("bearer URLs in the logs") == "bearer URLs in the logs"


# -- scrub --------------------------------------------------------------------------------
def _response_error(status: int, url: str = "https://h/o.dcm?Signature=s1&Expires=9") -> Any:
    import aiohttp
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    headers = CIMultiDictProxy(CIMultiDict({"If-Match": '"e"'}))
    info = aiohttp.RequestInfo(URL(url, encoded=True), "GET", headers)
    return aiohttp.ClientResponseError(info, (), status=status, message="Forbidden")


def test_scrub_keeps_types_and_attributes():
    url = "https://h/o.dcm?Signature=s1&Expires=9"
    clean = "https://h/o.dcm?Signature=REDACTED&Expires=9"
    error = scrub(FileNotFoundError(url))
    assert type(error) is FileNotFoundError and str(error) == clean
    error = scrub(FileNotFoundError(2, "No such file", url))
    assert isinstance(error, FileNotFoundError) and error.errno == 2 and error.filename == clean
    changed = scrub(hdfsspec.ObjectChangedError("replaced", path=url, offset=7, tag=0x7FE00010))
    assert isinstance(changed, hdfsspec.ObjectChangedError)
    assert (changed.path, changed.offset, changed.tag) == (clean, 7, 0x7FE00010)
    response = scrub(_response_error(403))
    assert type(response).__name__ == "ClientResponseError"
    assert getattr(response, "status", None) == 403 and not leaks(response)
    assert "s1" not in repr(response) and "https://h/o.dcm" in str(response)
    plain = ValueError("no URL here")
    assert scrub(plain) is plain


def test_scrub_redacts_the_chain_and_falls_back_to_oserror():
    url = "https://h/o.dcm?sig=s1"
    try:
        try:
            raise FileNotFoundError(url)
        except FileNotFoundError as inner:
            raise KeyError("clean") from inner
    except KeyError as outer:
        error: BaseException = outer
    assert leaks(error)
    same = scrub(error)
    assert same is error and not leaks(same)  # a clean error keeps its identity
    assert isinstance(same.__cause__, FileNotFoundError)

    class Custom(Exception):
        def __init__(self, url: str, status: int) -> None:
            super().__init__(url)
            self.status = status

        def __str__(self) -> str:
            return f"{self.status} {self.args[0]}"

    odd = scrub(Custom(url, 401))  # cannot be rebuilt from its args
    assert type(odd) is OSError and str(odd) == "Custom: 401 https://h/o.dcm?sig=REDACTED"

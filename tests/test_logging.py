"""The ``hdfsspec`` logger hierarchy: what is logged at INFO and DEBUG, and never a secret.

Reads go to real servers on loopback (the HTTP Range server; moto's S3 behind the
shaping proxy); each test checks the values read and that the requests and bytes the
records report are those of the file's ``stats``.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import fsspec
import highdicom as hd
import numpy as np
import pytest
from conftest import _s3_options
from oracle import reference_frames

import hdfsspec
from hdfsspec import _log
from hdfsspec.cache import requests as cache_requests
from hdfsspec.cli import main
from hdfsspec.io import planning
from hdfsspec.testing import ShapingProxy, build_slide, jpeg_tiles
from hdfsspec.testing.faults import Fault, FaultPlan

TILES = jpeg_tiles(4, 64, 3, seed=9)
SLIDE = build_slide(640, 640, tile=64, tiles=TILES)  # 10 x 10 tiles
NO_TABLE = build_slide(640, 640, tile=64, tiles=TILES, offset_table="empty")
KEY = "AKIALOGGINGTEST00042"
SECRET = "logging-secret-5b3f9e1d7c"
_ROUND = re.compile(r": (\w+) round: (\d+) range\(s\), (\d+) bytes")


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="hdfsspec")
    return caplog


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[ShapingProxy]:
    with ShapingProxy(s3_endpoint, lifetime=300) as p:
        yield p


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("hdfsspec")]


def rounds(caplog: pytest.LogCaptureFixture, phase: str) -> tuple[int, int]:
    """The requests and bytes of the request rounds logged for ``phase``."""
    found = [_ROUND.search(r.getMessage()) for r in ours(caplog)]
    mine = [m for m in found if m is not None and m[1] == phase]
    return sum(int(m[2]) for m in mine), sum(int(m[3]) for m in mine)


def _dicom(**options) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem(
        "dicom", target_protocol="http", skip_instance_cache=True, index_cache=False, **options
    )


def test_the_package_logger_has_a_null_handler_and_children():
    package = logging.getLogger("hdfsspec")
    assert any(isinstance(h, logging.NullHandler) for h in package.handlers)
    assert _log.get_logger("hdfsspec.cache.walk").parent is not None
    assert _log.get_logger("hdfsspec.cache.walk") is logging.getLogger("hdfsspec.cache.walk")
    with pytest.raises(ValueError, match="not a logger of the 'hdfsspec' hierarchy"):
        _log.get_logger("hdfsspecs.x")


def test_a_scan_is_logged_at_info_and_its_rounds_at_debug(records, http_server):
    url = http_server.put("logging/scan.dcm", NO_TABLE)
    expected = reference_frames(NO_TABLE)
    with _dicom(first_request=4096).open(url) as f:
        assert f.read_frames([99]) == [expected[99]]  # the last tile: the whole walk
        index, header_end = f.stats.phases["index"], f.header.header_end
    walk = [r for r in ours(records) if r.name == "hdfsspec.cache.walk"]
    infos = [r.getMessage() for r in walk if r.levelno == logging.INFO]
    assert len(infos) == 2, infos
    assert "no offset table: walking the items of the Pixel Data" in infos[0]
    assert f"({len(NO_TABLE) - header_end} bytes, 100 frames)" in infos[0]
    done = re.search(
        r"walked the items: (\d+) frames located, (\d+) requests, (\d+) bytes", infos[1]
    )
    assert done is not None and int(done[1]) == 100
    assert (int(done[2]), int(done[3])) == (index.requests, index.bytes)
    assert rounds(records, "index") == (index.requests, index.bytes)
    assert all(url.split("/")[-1] in r.getMessage() for r in walk)


def test_a_region_read_logs_its_plan_and_its_round(records, http_server):
    url = http_server.put("logging/region.dcm", SLIDE)
    http_server.log.clear()
    window = {"row_start": 101, "row_end": 301, "column_start": 51, "column_end": 251}
    with hdfsspec.imread(url, {"index_cache": False, "first_request": 4096}) as im:
        records.clear()
        pixels = im.get_total_pixel_matrix(**window)
        frames = im.file.stats.phases["frames"]
    expected = hd.imread(io.BytesIO(SLIDE)).get_total_pixel_matrix(**window)
    assert np.array_equal(pixels, expected)
    plans = [r.getMessage() for r in ours(records) if r.name == "hdfsspec.io.planning"]
    # rows 101-300 and columns 51-250 cover tiles 1-4 down and 0-3 across: 16 tiles
    assert any(m.startswith("plan of 16 frame(s): ") for m in plans), plans
    assert frames.requests > 0
    assert rounds(records, "frames") == (frames.requests, frames.bytes)
    assert all(r.levelno == logging.DEBUG for r in ours(records))


def test_a_retry_is_logged(records, s3_endpoint, proxy):
    fs = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    fs.pipe_file("hdfsspec-test/logging/retry.dcm", SLIDE)
    proxy.faults = FaultPlan(0, status=Fault(1.0, limit=1, after=1))  # the open's GET spared
    dicom = fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options=_s3_options(proxy.url),
        skip_instance_cache=True,
        index_cache=False,
        first_request=4096,
    )
    expected = reference_frames(SLIDE)
    with dicom.open("hdfsspec-test/logging/retry.dcm") as f:
        assert f.read_frames([0, 55]) == [expected[0], expected[55]]
        assert proxy.log.faults == {"status": 1}
        assert proxy.log.requests == f.stats.requests + 1  # the spoilt response, read again
    again = [r.getMessage() for r in ours(records) if r.name == "hdfsspec.io.retry"]
    assert len(again) == 1 and re.search(r"failed \(HTTP 5\d\d\): read again", again[0]), again


def test_nothing_is_formatted_while_debug_is_off(monkeypatch, http_server, caplog):
    """With DEBUG off the log calls cost a level check: no message, no redaction, no
    summary of ranges is made (with it on, they are)."""
    made: list[str] = []

    def counted(name, real):
        def wrapper(*args, **kwargs):
            made.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(cache_requests, "spans", counted("spans", cache_requests.spans))
    monkeypatch.setattr(planning, "spans", counted("spans", planning.spans))
    monkeypatch.setattr(cache_requests, "redact_url", counted("redact", cache_requests.redact_url))
    url = http_server.put("logging/quiet.dcm", SLIDE)
    expected = reference_frames(SLIDE)
    caplog.set_level(logging.INFO, logger="hdfsspec")
    with _dicom(first_request=4096).open(url) as f:
        assert f.read_frames([7, 70]) == [expected[7], expected[70]]
    assert made == [] and ours(caplog) == []
    caplog.set_level(logging.DEBUG, logger="hdfsspec")
    with _dicom(first_request=4096).open(url) as f:
        assert f.read_frames([7, 70]) == [expected[7], expected[70]]
    assert "spans" in made and "redact" in made and ours(caplog)


def test_no_secret_in_any_record_of_a_signed_read(records, s3_endpoint, proxy):
    """S3 credentials in the options and the presigned URLs made with them: none in the
    records of hdfsspec's loggers, at DEBUG."""
    options = {**_s3_options(proxy.url), "key": KEY, "secret": SECRET}
    fsspec.filesystem("s3", **{**options, "endpoint_url": s3_endpoint}).pipe_file(
        "hdfsspec-test/logging/signed.dcm", SLIDE
    )
    dicom = fsspec.filesystem(
        "dicom",
        target_protocol="s3",
        target_options=options,
        skip_instance_cache=True,
        index_cache=False,
        first_request=4096,
    )
    expected = reference_frames(SLIDE)
    with dicom.open("hdfsspec-test/logging/signed.dcm") as f:
        assert f.read_frames([3, 97]) == [expected[3], expected[97]]
        assert f._signed is not None and f._signed.active  # read through a presigned URL
        signature = re.search(r"Signature=([^&]+)", f._signed.url())
        assert proxy.log.requests == f.stats.requests
    assert signature is not None
    texts = [logging.Formatter("%(name)s %(message)s").format(r) for r in ours(records)]
    assert any("frames round" in t for t in texts)
    for text in texts:
        for secret in (KEY, SECRET, signature[1]):
            assert secret not in text, text


def test_no_secret_from_a_presigned_http_url(records, http_server):
    signature, credential = "9a8b7c6d5e4f" * 4, f"{KEY}%2F20260101%2Fus-east-1%2Fs3"
    query = f"?X-Amz-Credential={credential}&X-Amz-Expires=60&X-Amz-Signature={signature}"
    url = http_server.put("logging/presigned.dcm", NO_TABLE) + query
    expected = reference_frames(NO_TABLE)
    with _dicom(first_request=4096).open(url) as f:
        assert f.read_frames([0, 99]) == [expected[0], expected[99]]
    texts = [r.getMessage() for r in ours(records)]
    assert any("walked the items" in t for t in texts)
    assert any("logging/presigned.dcm" in t for t in texts)  # the object is named ...
    for text in texts:  # ... without its credentials
        assert signature not in text and KEY not in text, text


def test_the_command_line_s_verbose_flag(capsys, http_server, tmp_path):
    signature = "0123456789abcdef" * 3
    url = http_server.put("logging/cli.dcm", NO_TABLE) + f"?X-Amz-Signature={signature}"
    store = ["--index-cache", str(tmp_path / "store"), "--no-progress"]
    assert main(["index", url, *store]) == 0
    assert capsys.readouterr().err == ""  # quiet without -v
    assert main(["-v", "index", url, "--index-cache", "off"]) == 1  # nothing walked
    assert main(["index", url, "--index-cache", str(tmp_path / "other"), "-v"]) == 0
    err = capsys.readouterr().err
    infos = [line for line in err.splitlines() if " INFO " in line]
    assert any("hdfsspec.cache.walk" in line and "walking the items" in line for line in infos)
    assert not any(" DEBUG " in line for line in err.splitlines())
    assert main(["-vv", "info", url]) == 0
    err = capsys.readouterr().err
    assert " DEBUG hdfsspec.cache.requests: " in err and "header round" in err
    assert signature not in err and "X-Amz-Signature=REDACTED" in err
    package = logging.getLogger("hdfsspec")  # the command's handler is gone afterwards
    assert [type(h) for h in package.handlers] == [logging.NullHandler]
    assert package.level == logging.NOTSET

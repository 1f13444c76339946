"""Faults on the wire: bodies reset or cut short, 5xx, a 403, a stall, an object replaced.

The faults come from :class:`~hdfsspec.testing.ShapingProxy` with a seeded
:class:`~hdfsspec.testing.faults.FaultPlan`, over real sockets, in front of moto's S3,
the HTTP Range server and Azurite. Each read test asserts the values against the local
bytes and the requests on the wire: the file's own count plus one per fault injected
(every spoilt response is answered by one more request).
"""

from __future__ import annotations

import asyncio
import errno
import pickle
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import fsspec
import pytest
from conftest import BUCKET, _az_options, _s3_options
from oracle import reference_frames

import hdfsspec
from hdfsspec import ObjectChangedError, TransportError
from hdfsspec.io import retry
from hdfsspec.testing import (
    RangeHTTPServer,
    ShapingProxy,
    build_encapsulated,
    build_slide,
    fake_jpeg_frames,
    jpeg_tiles,
)
from hdfsspec.testing.faults import KINDS, Fault, FaultPlan
from hdfsspec.testing.soak import CUT, soak

SLIDE = build_slide(512, 512, tile=64, tiles=jpeg_tiles(4, 64, 3))  # 64 tiles of a few KB
EXPECTED = reference_frames(SLIDE)
FRAMES = [3, 17, 40, 63]


def _spans(blob: bytes, frames: list[bytes]) -> list[tuple[int, int]]:
    """Where each frame's bytes are in ``blob``."""
    out, at = [], blob.index(b"\xe0\x7f\x10\x00")  # the Pixel Data
    for frame in frames:
        at = blob.index(frame, at)
        out.append((at, at + len(frame)))
        at += len(frame)
    return out


SPANS = _spans(SLIDE, EXPECTED)
_CHANGED = bytearray(SLIDE)  # every frame's bytes changed in place: the same size and layout
for _a, _b in SPANS:
    _CHANGED[_a + 2 : _b - 2] = bytes(x ^ 0x5A for x in SLIDE[_a + 2 : _b - 2])
OTHER = bytes(_CHANGED)
READS = ["signed", "s3fs"]


@pytest.fixture(scope="module")
def s3_proxy(s3_endpoint):
    with ShapingProxy(s3_endpoint, lifetime=600) as p:
        yield p


@pytest.fixture
def proxy(s3_proxy):
    """The proxy in front of moto's S3, without faults and with an empty log."""
    s3_proxy.faults = None
    s3_proxy.log.clear()
    yield s3_proxy
    s3_proxy.faults = None


@pytest.fixture
def quick(monkeypatch):
    """The same attempts, with short waits between them (tests of exhausted retries)."""
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.005)


def _put(s3_endpoint: str, name: str, data: bytes) -> str:
    path = f"{BUCKET}/faults/{name}"
    fsspec.filesystem("s3", **_s3_options(s3_endpoint)).pipe_file(path, data)
    return path


_MADE: dict[str, fsspec.AbstractFileSystem] = {}


def _dicom(endpoint: str, reads: str, **options) -> fsspec.AbstractFileSystem:
    """A ``dicom`` filesystem over s3fs at ``endpoint`` (made once per arguments: an s3fs
    client costs a few tenths of a second)."""
    key = repr((endpoint, reads, sorted(options.items())))
    if key not in _MADE:
        target = {**_s3_options(endpoint), **options.pop("target", {})}
        _MADE[key] = fsspec.filesystem(
            "dicom",
            target_protocol="s3",
            target_options=target,
            skip_instance_cache=True,
            index_cache=False,
            first_request=4096,  # the header and table: frames are requests of their own
            signed_urls=reads == "signed",
            **options,
        )
    return _MADE[key]


def _http() -> fsspec.AbstractFileSystem:
    target = fsspec.filesystem("http", skip_instance_cache=True)
    return fsspec.filesystem(
        "dicom", fs=target, skip_instance_cache=True, index_cache=False, first_request=4096
    )


@contextmanager
def _front(reads: str, shared: ShapingProxy) -> Iterator[tuple[ShapingProxy, Any]]:
    """The proxy to read through: the shared one of moto's S3 (without faults, its log
    empty), or a new one in front of a new HTTP Range server serving the slide."""
    if reads != "http":
        shared.faults = None
        shared.log.clear()
        try:
            yield shared, None
        finally:
            shared.faults = None
        return
    with RangeHTTPServer({"slide.dcm": SLIDE}) as server, ShapingProxy(server.url()) as proxy:
        yield proxy, server


def _injected(proxy: ShapingProxy) -> int:
    return sum(proxy.log.faults.values())


# -- the plan and the proxy ---------------------------------------------------------------
def test_a_fault_plan_is_seeded_and_bounded():
    def kinds(plan: FaultPlan, n: int = 400) -> list[str | None]:
        out = []
        for _ in range(n):
            strike = plan.choose("GET", "/x")
            out.append(None if strike is None else strike.kind)
        return out

    mix = {"status": 0.2, "reset": 0.3, "short": Fault(0.1, limit=3)}
    first, again = kinds(FaultPlan(7, **mix)), kinds(FaultPlan(7, **mix))
    assert first == again  # the same responses meet the same faults
    assert first != kinds(FaultPlan(8, **mix))
    assert first.count("short") == 3 and 50 < first.count("status") < 110
    assert set(first) == {None, "status", "reset", "short"}
    once = FaultPlan(0, forbid=Fault(1.0, limit=1, after=1))
    assert kinds(once, 4) == [None, "forbid", None, None]  # the open spared, then one 403
    assert FaultPlan(0, reset=1.0).choose("HEAD", "/x") is None  # GETs only
    with pytest.raises(ValueError, match="more than 1"):
        FaultPlan(0, reset=0.6, short=0.6)
    assert KINDS == ("status", "forbid", "reset", "short", "truncate", "stall")


@pytest.mark.parametrize("kind", KINDS)
def test_the_proxy_injects_each_fault(kind):
    import http.client

    data = bytes(range(256)) * 40
    plan = FaultPlan(0, stall_seconds=0.3, **{kind: Fault(1.0, limit=1)})
    with RangeHTTPServer({"x": data}) as server, ShapingProxy(server.url(), faults=plan) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])

        def get() -> tuple[int, dict[str, str], bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/x", headers={"Range": "bytes=100-8099"})
                resp = conn.getresponse()
                return resp.status, dict(resp.getheaders()), resp.read()
            finally:
                conn.close()

        t0 = time.perf_counter()
        if kind in ("reset", "short"):
            with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
                get()
        else:
            status, headers, body = get()
            if kind in ("status", "forbid"):
                assert status in ((500, 503) if kind == "status" else (403,))
                assert b"<Error><Code>" in body
            elif kind == "truncate":  # consistent, and short
                assert (
                    status == 206 and 0 < len(body) < 8000 and body == data[100 : 100 + len(body)]
                )
                assert headers["Content-Range"] == f"bytes 100-{99 + len(body)}/{len(data)}"
            else:  # a stall: all of it, late
                assert (status, body) == (206, data[100:8100])
                assert time.perf_counter() - t0 >= 0.3
        assert get() == (206, get()[1], data[100:8100])  # the limit: once
        assert proxy.log.faults == {kind: 1} and proxy.log.requests == 3
        assert server.log.requests == (2 if kind in ("status", "forbid") else 3)  # not forwarded


# -- the open's first GET -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reset", "short", "truncate"])
@pytest.mark.parametrize("reads", READS)
def test_a_fault_on_the_opens_first_get_is_read_again(s3_endpoint, proxy, reads, kind):
    """The first read takes the body outside s3fs's retries: one reset failed the open."""
    path = _put(s3_endpoint, f"open-{reads}-{kind}.dcm", SLIDE)
    proxy.faults = FaultPlan(0, **{kind: Fault(1.0, limit=1)})
    with _dicom(proxy.url, reads).open(path) as f:
        assert proxy.log.requests == 2 and proxy.log.faults == {kind: 1}  # spoilt, again
        assert f.size == len(SLIDE) and f.stats.requests == 1
        assert f.read_frames(FRAMES) == [EXPECTED[i] for i in FRAMES]
        assert proxy.log.requests == f.stats.requests + 1
        assert proxy.log.bytes == f.stats.bytes + proxy.log.entries[0][4]  # what was cut


def test_a_reset_on_the_opens_first_get_on_azure(azure_connection):
    target = fsspec.filesystem("az", **_az_options(azure_connection))
    target.pipe_file(f"{BUCKET}/faults/open.dcm", SLIDE)
    endpoint = re.search(r"BlobEndpoint=(http://[^/]+)(/[^;]*);", azure_connection)
    assert endpoint is not None
    plan = FaultPlan(0, reset=Fault(1.0, limit=1))  # the open's GET
    with ShapingProxy(endpoint.group(1), faults=plan) as proxy:
        connection = azure_connection.replace(endpoint.group(1), proxy.url)
        fs = fsspec.filesystem(
            "dicom",
            target_protocol="az",
            target_options=_az_options(connection),
            skip_instance_cache=True,
            index_cache=False,
            first_request=4096,
        )
        with fs.open(f"{BUCKET}/faults/open.dcm") as f:
            assert f.size == len(SLIDE)
            assert f.read_frames(FRAMES) == [EXPECTED[i] for i in FRAMES]
            assert proxy.log.faults == {"reset": 1}
            assert proxy.log.requests == f.stats.requests + 1


def test_a_fault_on_every_attempt_of_the_open_raises_transport_error(s3_endpoint, proxy, quick):
    path = _put(s3_endpoint, "open-always.dcm", SLIDE)
    proxy.faults = FaultPlan(0, reset=1.0)
    with pytest.raises(TransportError) as err:
        _dicom(proxy.url, "signed").open(path)
    assert (err.value.start, err.value.stop) == (0, 4096)
    assert err.value.path == f"s3://{path}" and "bytes 0-4096" in str(err.value)
    # the GET of the signed URL once, then s3fs's: its attempts, its error
    assert proxy.log.requests == proxy.log.faults["reset"] == retry.ATTEMPTS + 1


# -- many operations ----------------------------------------------------------------------
def _operations(n: int, seed: int, frames: int = 2) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(64), frames) for _ in range(n)]


@pytest.mark.parametrize("reads", [*READS, "http"])
def test_resets_and_short_bodies_at_10_percent(s3_endpoint, reads, quick):
    """Every operation (a frame; an open before every third) reads the right bytes,
    and at least as many succeed as through the target's own ``cat_ranges`` (the same
    ranges, the header's before every third) under the same faults."""
    mix = {"reset": 0.1, "short": 0.1}
    operations = _operations(30, seed=5, frames=1)  # one request each: the same sequence
    with RangeHTTPServer() as server:
        upstream = server.url() if reads == "http" else s3_endpoint
        with (
            ShapingProxy(upstream, faults=FaultPlan(5, **mix)) as ours,
            ShapingProxy(upstream, faults=FaultPlan(5, **mix)) as theirs,
        ):
            if reads == "http":
                server.put("slide.dcm", SLIDE)
                fs, path = _http(), f"{ours.url}/slide.dcm"
                plain = fsspec.filesystem("http", skip_instance_cache=True)
                plain_path = f"{theirs.url}/slide.dcm"
            else:
                path = plain_path = _put(s3_endpoint, f"mix-{reads}.dcm", SLIDE)
                fs = _dicom(ours.url, reads)
                plain = fsspec.filesystem("s3", **_s3_options(theirs.url))

            def plain_reads() -> int:
                succeeded = 0
                for k, frames in enumerate(operations):
                    spans = [(0, 4096)] if k % 3 == 0 else []
                    spans += [SPANS[i] for i in frames]
                    out = plain.cat_ranges(
                        [plain_path] * len(spans), [a for a, _ in spans], [b for _, b in spans]
                    )
                    succeeded += out == [SLIDE[a:b] for a, b in spans]
                return succeeded

            with ThreadPoolExecutor(1) as pool:  # theirs meanwhile: the waits overlap
                baseline = pool.submit(plain_reads)
                counted = 0
                for k in range(0, len(operations), 3):
                    with fs.open(path, cache_options={"max_cache_bytes": 1}) as f:  # none kept
                        for frames in operations[k : k + 3]:
                            assert f.read_frames(frames) == [EXPECTED[i] for i in frames]
                        counted += f.stats.requests
                succeeded = baseline.result()
            assert _injected(ours) >= 6 and set(ours.log.faults) == set(mix)
            assert ours.log.requests == counted + _injected(ours)
            assert _injected(theirs) >= 6
            assert len(operations) >= succeeded  # every one of ours succeeded


@pytest.mark.parametrize("reads", [*READS, "http"])
def test_5xx_at_50_percent_gives_the_right_bytes_or_transport_error(
    s3_endpoint, s3_proxy, reads, quick
):
    # s3fs's reads are retried by botocore (0-1 s, 0-2 s... between attempts): fewer
    count = {"http": 12, "signed": 6, "s3fs": 2}[reads]
    operations = _operations(count, seed=6, frames=1 if reads == "s3fs" else 2)
    plan = FaultPlan(4, status=Fault(0.5, after=1))  # the open's GET is spared
    outcomes = {"right": 0, "transport": 0}
    with _front(reads, s3_proxy) as (proxy, _):
        proxy.faults = plan
        if reads == "http":
            fs, path = _http(), f"{proxy.url}/slide.dcm"
        else:
            path = _put(s3_endpoint, f"5xx-{reads}.dcm", SLIDE)
            fs = _dicom(proxy.url, reads)
        with fs.open(path, cache_options={"max_cache_bytes": 1}) as f:  # no frame kept
            for frames in operations:
                try:
                    got = f.read_frames(frames)
                except TransportError as err:  # anything else fails the test
                    assert err.__cause__ is not None and "bytes" in str(err)
                    outcomes["transport"] += 1
                else:
                    assert got == [EXPECTED[i] for i in frames]
                    outcomes["right"] += 1
        assert proxy.log.faults["status"] >= max(1, len(operations) // 2)
    assert outcomes["right"] >= len(operations) // 2


# -- retries exhausted --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reset", "truncate"])
@pytest.mark.parametrize("reads", [*READS, "http"])
def test_a_fault_on_every_attempt_raises_transport_error(
    s3_endpoint, s3_proxy, reads, kind, monkeypatch
):
    if reads != "http":  # the HTTP target keeps the real waits: they are measured below
        monkeypatch.setattr(retry, "FIRST_DELAY", 0.005)
    with _front(reads, s3_proxy) as (proxy, _):
        if reads == "http":
            fs, path = _http(), f"{proxy.url}/slide.dcm"
            name = path
        else:
            path = _put(s3_endpoint, f"always-{reads}-{kind}.dcm", SLIDE)
            fs, name = _dicom(proxy.url, reads), f"s3://{path}"
        with fs.open(path) as f:
            (span,) = f.plan([20]).ranges
            before = proxy.log.requests
            proxy.faults = FaultPlan(0, **{kind: 1.0})
            t0 = time.perf_counter()
            with pytest.raises(TransportError) as err:
                f.read_frames([20])
            elapsed = time.perf_counter() - t0
    error = err.value
    assert isinstance(error, OSError) and error.errno == errno.EIO
    assert (error.path, error.start, error.stop) == (name, *span)
    text = str(error)
    assert text.startswith(f"{name}: bytes {span[0]}-{span[1]} could not be read after the")
    assert "Signature" not in text and "?" not in text
    assert error.__cause__ is not None
    if kind == "truncate":
        assert isinstance(error.__cause__, retry.ShortRead) and "received" in text
    # the signed URL's attempts, then s3fs's; each one spoilt
    attempts = retry.ATTEMPTS * (2 if reads == "signed" else 1)
    assert proxy.log.requests - before == proxy.log.faults[kind] == attempts
    if reads == "http":  # backoff: at least half of 0.1 + 0.2 + 0.4 + 0.8 s
        assert elapsed >= 0.5 * sum(min(2.0, 0.1 * 2**k) for k in range(retry.ATTEMPTS - 1))
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.path, again.start, again.stop, str(again)) == (
        TransportError,
        error.path,
        error.start,
        error.stop,
        text,
    )


def test_a_scan_raises_transport_error(s3_endpoint, quick):
    """An object without offset table is walked in windows, fetched in a thread pool.
    (A proxy of its own: the windows in flight when one fails finish their attempts
    after the error is raised.)"""
    blob = build_encapsulated(fake_jpeg_frames(300, seed=2), offset_table="empty")
    path = _put(s3_endpoint, "scan.dcm", blob)
    with ShapingProxy(s3_endpoint) as proxy:
        fs = _dicom(proxy.url, "s3fs", scan_window=64 * 1024)
        with fs.open(path) as f:
            proxy.faults = FaultPlan(0, reset=1.0)
            with pytest.raises(TransportError) as err:
                f.index  # noqa: B018
    assert err.value.path == f"s3://{path}" and err.value.start >= 4096
    assert isinstance(err.value.__cause__, Exception) and "bytes" in str(err.value)


# -- a 403, a replaced object, a stall ----------------------------------------------------
@pytest.mark.parametrize("reads", READS)
def test_a_403_once_after_the_open(s3_endpoint, proxy, reads):
    path = _put(s3_endpoint, f"403-{reads}.dcm", SLIDE)
    proxy.faults = FaultPlan(0, forbid=Fault(1.0, limit=1, after=1))
    with _dicom(proxy.url, reads).open(path) as f:
        if reads == "signed":  # an expired URL, say: signed again
            assert f.read_frames(FRAMES) == [EXPECTED[i] for i in FRAMES]
            assert proxy.log.requests == f.stats.requests + 1 and f._signed.active
        else:  # S3 refused s3fs's GET: the backend's error, as it is
            with pytest.raises(PermissionError) as err:
                f.read_frames(FRAMES)
            assert not isinstance(err.value, TransportError)
            assert f.read_frames(FRAMES) == [EXPECTED[i] for i in FRAMES]  # once
    assert proxy.log.faults == {"forbid": 1}


@pytest.mark.parametrize("reads", [*READS, "http"])
def test_a_same_size_replacement_under_faults_raises_object_changed(s3_endpoint, s3_proxy, reads):
    """Retries send the same If-Match: the other object is never served."""
    with _front(reads, s3_proxy) as (proxy, server):
        if reads == "http":
            fs, path = _http(), f"{proxy.url}/slide.dcm"

            def replace() -> None:
                server.put("slide.dcm", OTHER)
        else:
            path = _put(s3_endpoint, f"replaced-{reads}.dcm", SLIDE)
            fs = _dicom(proxy.url, reads)

            def replace() -> None:
                _put(s3_endpoint, f"replaced-{reads}.dcm", OTHER)

        with fs.open(path, cache_options={"max_cache_bytes": 1}) as f:
            assert f.read_frames(FRAMES) == [EXPECTED[i] for i in FRAMES]
            proxy.faults = FaultPlan(2, reset=0.3, short=0.2)
            replace()
            for _ in range(3):
                with pytest.raises(ObjectChangedError, match="ETag"):
                    f.read_frames(list(range(64)))
    assert len(OTHER) == len(SLIDE) and reference_frames(OTHER) != EXPECTED


@pytest.mark.parametrize("reads", READS)
def test_a_stall_ends_at_the_read_timeout(s3_endpoint, proxy, reads):
    path = _put(s3_endpoint, f"stall-{reads}.dcm", SLIDE)
    timeout = {"config_kwargs": {"read_timeout": 1, "connect_timeout": 1}}
    proxy.faults = FaultPlan(0, stall=Fault(1.0, limit=1, after=1), stall_seconds=3.0)
    with _dicom(proxy.url, reads, target=timeout).open(path) as f:
        t0 = time.perf_counter()
        assert f.read_frames([20]) == [EXPECTED[20]]
        elapsed = time.perf_counter() - t0
        assert 0.9 < elapsed < 2.5  # the read timeout, then one more GET; not the stall
        assert proxy.log.faults == {"stall": 1}
        assert proxy.log.requests == f.stats.requests + 1


# -- what is transient --------------------------------------------------------------------
def test_which_failures_are_retried_and_which_become_transport_errors():
    import aiohttp
    import botocore.exceptions

    def response_error(status: int) -> aiohttp.ClientResponseError:
        return aiohttp.ClientResponseError(None, (), status=status)  # type: ignore[arg-type]

    transient = retry.is_transient
    assert transient(aiohttp.ClientPayloadError("cut")) and transient(retry.ShortRead(0, 9, 4))
    assert transient(aiohttp.ServerDisconnectedError()) and transient(asyncio.TimeoutError())
    assert transient(ConnectionResetError()) and transient(response_error(503))
    assert transient(response_error(429)) and transient(response_error(408))
    assert transient(botocore.exceptions.ResponseStreamingError(error="x"))
    assert transient(botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2))
    slow = OSError(errno.EBUSY, "Please reduce your request rate.")  # as s3fs translates
    slow.__cause__ = botocore.exceptions.ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"
    )
    assert transient(slow)
    changed = ObjectChangedError("replaced", path="s3://b/k", offset=3)
    for final in (
        FileNotFoundError("gone"),
        PermissionError("denied"),
        changed,
        response_error(403),
        response_error(404),
        response_error(412),
        ValueError("x"),
    ):
        assert not transient(final)
        assert retry.transport_error(final, "s3://b/k", 0, 9) is final  # unchanged
    made = retry.transport_error(slow, "https://h/k.dcm?X-Amz-Signature=abc", 5, 9)
    assert isinstance(made, TransportError) and made.__cause__ is slow
    assert str(made).startswith("https://h/k.dcm: bytes 5-9 could not be read")
    assert hdfsspec.TransportError is TransportError and "TransportError" in hdfsspec.__all__


def test_backoff_doubles_with_jitter_up_to_the_cap():
    rng = random.Random(0)
    for k in range(1, 8):
        base = min(retry.MAX_DELAY, retry.FIRST_DELAY * 2 ** (k - 1))
        assert base / 2 <= retry.backoff(k, rng) <= base


# -- the soak, short ----------------------------------------------------------------------
def test_soak_short_form(s3_endpoint):
    """``python -m hdfsspec.testing.soak`` for 8 s: no wrong byte, no untyped error, no
    hang, and as many successes as plain s3fs where bodies are reset or cut short."""
    scenarios = ["resets 10%", "short 10%", "5xx 10%", "truncated 10%", "403 once", "replaced"]
    report = soak(8, seed=1, scenarios=scenarios, endpoint=s3_endpoint, deadline=30)
    print(report.table())
    assert not report.problems(), report.table()
    for name in scenarios:
        ours = report.row(name, "hdfsspec")
        assert ours.operations >= 1 and ours.wrong == ours.untyped == ours.hangs == 0
        if name in CUT:
            assert ours.successes == ours.operations >= report.row(name, "s3fs").successes
    assert report.row("replaced", "hdfsspec").errors.keys() <= {"ObjectChangedError"}
    assert sum(r.operations for r in report.rows if r.client == "hdfsspec") >= 15

"""An S3 target's client and HTTP sessions are made in the background as soon as the
``dicom`` filesystem is made: no request and no connection (the first read then finds
them; the seconds saved are measured in ``benchmarks/``, the first region of a new
process)."""

from __future__ import annotations

import socket

import fsspec
import pytest

from hdfsspec.io.warm import warm_up


@pytest.fixture
def listener():
    """A loopback port that counts connections (none are expected)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    yield sock
    sock.close()


def _s3(port: int) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        key="k",
        secret="s",
        skip_instance_cache=True,
    )


def _no_connection(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except TimeoutError:
        return True
    return False


def test_warm_up_makes_the_client_and_its_session_without_a_connection(listener):
    s3 = _s3(listener.getsockname()[1])
    made = []
    thread = warm_up(s3, lambda: made.append(True))
    assert thread is not None
    thread.join(60)
    assert not thread.is_alive()
    client = s3._s3
    assert client is not None  # botocore's client
    assert client._endpoint.http_session._sessions  # and the aiohttp session of its pool
    assert made == [True]  # the steps after it ran too
    assert _no_connection(listener)
    assert warm_up(s3) is None  # once a target


def test_where_reads_are_signed_only_the_client_is_made(listener):
    """Signed reads need s3fs's client (it signs their URLs), not its requests' session
    (its TLS context: about 45 ms of CPU beside the first read)."""
    s3 = _s3(listener.getsockname()[1])
    made = []
    thread = warm_up(s3, lambda: made.append(True), requests=False)
    assert thread is not None
    thread.join(60)
    assert s3._s3 is not None and made == [True]
    assert not s3._s3._endpoint.http_session._sessions
    assert _no_connection(listener)


def test_only_s3_targets_are_warmed(tmp_path):
    assert warm_up(fsspec.filesystem("file")) is None
    assert warm_up(fsspec.filesystem("memory")) is None


def test_a_failing_step_is_left_to_the_first_request(listener):
    s3 = _s3(listener.getsockname()[1])

    def fails() -> None:
        raise RuntimeError("not now")

    thread = warm_up(s3, fails)
    assert thread is not None
    thread.join(60)  # the thread ends quietly
    assert not thread.is_alive() and s3._s3 is not None


def test_the_dicom_filesystem_warms_its_s3_target(listener):
    options = {"endpoint_url": f"http://127.0.0.1:{listener.getsockname()[1]}", "key": "k"}
    options.update(secret="s", skip_instance_cache=True)

    def dicom(**more: object) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem(
            "dicom", target_protocol="s3", target_options=options, index_cache=False,
            skip_instance_cache=True, **more,
        )  # fmt: skip

    assert getattr(dicom().fs, "_hdfsspec_warmed", False)
    assert not getattr(dicom(warm=False).fs, "_hdfsspec_warmed", False)
    assert _no_connection(listener)

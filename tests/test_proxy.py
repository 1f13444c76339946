"""The shaping proxy: it forwards, counts, and adds the latency and bandwidth it is told to."""

from __future__ import annotations

import http.client
import re
import time

import fsspec
import pytest
from conftest import BUCKET, _az_options, _s3_options
from oracle import reference_frames

from hdfsspec.testing import RangeHTTPServer, ShapingProxy, build_encapsulated, fake_jpeg_frames

BLOB = build_encapsulated(fake_jpeg_frames(50, min_size=3000, max_size=5000), offset_table="eot")


def test_proxy_counts_and_delays_each_round_trip():
    with RangeHTTPServer({"x.dcm": BLOB}) as server, ShapingProxy(server.url(), rtt=0.05) as proxy:
        url = proxy.url + "/x.dcm"
        t0 = time.perf_counter()
        with fsspec.open("dicom::" + url) as f:
            frames = f.read_frames(list(range(10, 40)))
            assert f.stats.requests == 2  # header, then one coalesced range
        elapsed = time.perf_counter() - t0
        assert frames == reference_frames(BLOB)[10:40]
        gets = proxy.log.gets()
        assert len(gets) == 2 and server.log.requests == 2
        assert proxy.log.bytes == server.log.bytes
        assert elapsed >= 3 * 0.05  # HEAD for the size, then two GETs, each one round trip


def test_proxy_bandwidth_is_shared_and_enforced():
    data = bytes(range(256)) * 8192  # 2 MiB
    with (
        RangeHTTPServer({"big": data}) as server,
        ShapingProxy(server.url(), bandwidth=8 * 2**20) as proxy,
    ):
        fs = fsspec.filesystem("http", skip_instance_cache=True)
        t0 = time.perf_counter()
        out = fs.cat_ranges([proxy.url + "/big"] * 2, [0, 2**20], [2**20, 2**21])
        elapsed = time.perf_counter() - t0
    assert b"".join(out) == data
    assert elapsed >= 0.2  # 2 MiB over a shared 8 MiB/s link: at least 0.25 s, minus slack


def test_proxy_in_front_of_s3(s3_endpoint):
    target = fsspec.filesystem("s3", **_s3_options(s3_endpoint))
    target.pipe_file(f"{BUCKET}/proxied.dcm", BLOB)
    with ShapingProxy(s3_endpoint, rtt=0.01) as proxy:
        fs = fsspec.filesystem(
            "dicom",
            target_protocol="s3",
            target_options=_s3_options(proxy.url),
            skip_instance_cache=True,
        )
        with fs.open(f"{BUCKET}/proxied.dcm") as f:
            # no HEAD: one ranged GET gave the size, the ETag and the header's first bytes
            assert len(proxy.log.entries) == 1 and proxy.log.entries[0][0] == "GET"
            assert f.size == len(BLOB)
            assert f.read_frames([0, 49]) == [reference_frames(BLOB)[i] for i in (0, 49)]
            assert f.stats.requests == 2  # header (holding frame 0), then frame 49
        assert len(proxy.log.gets()) == len(proxy.log.entries) == 2
        with pytest.raises(FileNotFoundError):
            fs.open(f"{BUCKET}/missing.dcm")


def test_proxy_in_front_of_azurite(azure_connection, tmp_path):
    """Azure opens with one ranged download too: its Content-Range gives the size."""
    target = fsspec.filesystem("az", **_az_options(azure_connection))
    target.pipe_file(f"{BUCKET}/proxied.dcm", BLOB)
    endpoint = re.search(r"BlobEndpoint=(http://[^/]+)(/[^;]*);", azure_connection)
    assert endpoint is not None
    with ShapingProxy(endpoint.group(1), rtt=0.01) as proxy:
        connection = azure_connection.replace(endpoint.group(1), proxy.url)
        fs = fsspec.filesystem(
            "dicom",
            target_protocol="az",
            target_options=_az_options(connection),
            skip_instance_cache=True,
            index_cache=str(tmp_path),
        )
        with fs.open(f"{BUCKET}/proxied.dcm") as f:
            # no HEAD (get_blob_properties): one ranged GET gave the size and the ETag
            assert [e[0] for e in proxy.log.entries] == ["GET"]
            assert f.size == len(BLOB)
            assert f.read_frames([0, 49]) == [reference_frames(BLOB)[i] for i in (0, 49)]
            assert f.stats.requests == 2 == len(proxy.log.entries)
            assert f.stats.bytes == proxy.log.bytes
        identity = target.info(f"{BUCKET}/proxied.dcm")  # adlfs's own info: the same identity
        assert fs.index_store.latest("abfs", f"{BUCKET}/proxied.dcm")["version"] == (
            f"etag={identity['etag']}"
        )
        proxy.log.clear()
        with fs.open(f"{BUCKET}/proxied.dcm") as f:  # reopen: nothing until the frame
            assert proxy.log.entries == []
            assert f.read_frames([49]) == [reference_frames(BLOB)[49]]
            sizes = [e[4] for e in proxy.log.entries]
            # the frame alone, conditional on the saved ETag: it checks the version
            assert len(sizes) == 1 and f.stats.rounds == 1
            assert f.stats.phases["index"].requests == 0
        with pytest.raises(FileNotFoundError):
            fs.open(f"{BUCKET}/missing.dcm")


def test_proxy_serves_local_objects_by_range(tmp_path):
    path = tmp_path / "obj.bin"
    path.write_bytes(BLOB)
    with (
        RangeHTTPServer() as server,
        ShapingProxy(server.url(), local_objects={"/bucket/obj.bin": str(path)}) as proxy,
    ):
        fs = fsspec.filesystem("http", skip_instance_cache=True)
        assert fs.cat_file(proxy.url + "/bucket/obj.bin", 100, 300) == BLOB[100:300]
        assert server.log.requests == 0 and proxy.log.bytes == 200


def test_proxy_refuses_non_loopback_upstream():
    with pytest.raises(ValueError, match="loopback"):
        ShapingProxy("http://10.0.0.1:9000")


def test_proxy_forwards_a_chunked_request_body_and_keeps_the_connection():
    with RangeHTTPServer() as server, ShapingProxy(server.url()) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
        conn.request("PUT", "/up.bin", body=iter([b"abc", b"defg"]))  # chunked: no length
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (201, b"")
        conn.request("GET", "/up.bin", headers={"Range": "bytes=2-4"})
        resp = conn.getresponse()  # on the same connection: it was kept alive
        assert (resp.status, resp.read()) == (206, b"cde")
        conn.close()
        assert server.files["up.bin"] == b"abcdefg"  # forwarded whole, with a length
        assert [(e[0], e[2], e[4]) for e in proxy.log.entries] == [("PUT", None, 0), ("GET", 2, 3)]


def test_proxy_answers_expect_100_continue():
    import socket

    with RangeHTTPServer() as server, ShapingProxy(server.url()) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"PUT /e.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(b"abc")  # the body only once told to go on
            assert sock.recv(256).split(b"\r\n")[0].split(b" ")[1] == b"201"
        assert server.files["e.bin"] == b"abc"


def test_proxy_answers_502_when_the_upstream_is_gone():
    with RangeHTTPServer({"x": b"x"}) as server:
        upstream = server.url()
    with ShapingProxy(upstream) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
        conn.request("GET", "/x")
        assert conn.getresponse().status == 502
        conn.close()

"""Shared fixtures: the synthetic corpus and the storage backends (real servers on loopback)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pytest

from hdfsspec.testing import (
    CountingFileSystem,
    RangeHTTPServer,
    build_encapsulated,
    build_native,
    fake_jpeg_frames,
    moto_s3,
)
from hdfsspec.testing.emulators import azurite, gcs_emulator  # sets the gcsfs gRPC switch

# persisted indexes would make request counts depend on earlier tests: off, except where
# a test gives a store of its own (test_persist.py)
os.environ["HDFSSPEC_INDEX_CACHE"] = "off"
# the cost model learns the link from timings: fixed values keep request counts exact and
# the same on every machine (test_link.py covers the learning). The first request of an
# open is 64 KiB, as the suite's counts were written for (by default it is sized by the
# link: 1 MiB here; test_first_request.py passes first_request=None for that)
fsspec.config.conf.setdefault("dicom", {}).update(
    rtt=0.02, bandwidth=100e6, first_request=64 * 1024, tail_request=0
)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
BUCKET = "hdfsspec-test"


def _corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    frames = fake_jpeg_frames(12, seed=3)
    u16 = rng.integers(0, 4096, (5, 9, 7), dtype=np.uint16)
    rgb = rng.integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
    return {
        "bot.dcm": build_encapsulated(frames, offset_table="bot"),
        "eot.dcm": build_encapsulated(frames, offset_table="eot"),
        "eot_nolen.dcm": build_encapsulated(frames, offset_table="eot-no-lengths"),
        "empty_bot.dcm": build_encapsulated(frames, offset_table="empty"),
        "fragmented_bot.dcm": build_encapsulated(
            frames, offset_table="bot", fragments_per_frame=3
        ),
        "fragmented_empty.dcm": build_encapsulated(
            frames, offset_table="empty", fragments_per_frame=3
        ),
        "dual_tiff.dcm": build_encapsulated(frames, offset_table="empty", dual_tiff=True),
        "single_frame.dcm": build_encapsulated(
            frames[:1], offset_table="empty", fragments_per_frame=2
        ),
        "trailing.dcm": build_encapsulated(
            frames,
            offset_table="bot",
            trailing=b"\xfc\xff\xfc\xffOB\x00\x00" + (16).to_bytes(4, "little") + b"\x00" * 16,
        ),
        "native_u16.dcm": build_native(u16),
        "native_rgb.dcm": build_native(rgb),
        "native_bits.dcm": build_native(rng.integers(0, 2, (7, 5, 3), dtype=np.uint8) > 0, bits=1),
        "native_float.dcm": build_native(
            rng.random((3, 4, 6), dtype=np.float32), pixel_keyword="FloatPixelData"
        ),
        "native_double.dcm": build_native(
            rng.random((3, 4, 6)), pixel_keyword="DoubleFloatPixelData"
        ),
        "native_big_endian.dcm": build_native(u16, transfer_syntax="1.2.840.10008.1.2.2"),
        "native_implicit.dcm": build_native(u16, transfer_syntax="1.2.840.10008.1.2"),
        "native_single.dcm": build_native(u16[:1]),
    }


def saved(ds: Any, syntax: str | None = None) -> bytes:
    """The Part 10 bytes of a pydicom data set, written in ``syntax`` if given."""
    import io

    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def with_short_value(blob: bytes, tag: int, vr: bytes, value: bytes) -> bytes:
    """``blob`` with the (short, explicit VR) element ``tag`` given ``value`` (even length)."""
    import struct

    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    at = blob.index(head)
    (length,) = struct.unpack_from("<H", blob, at + 6)
    return blob[:at] + head + struct.pack("<H", len(value)) + value + blob[at + 8 + length :]


CORPUS = _corpus()


@pytest.fixture(scope="session")
def corpus() -> dict[str, bytes]:
    """Synthetic files covering every layout, by name."""
    return CORPUS


@dataclass
class Backend:
    """One storage backend: where to put objects and how to reach them."""

    name: str
    target: fsspec.AbstractFileSystem
    root: str
    storage_options: dict[str, Any]
    server: RangeHTTPServer | None = None

    def put(self, name: str, data: bytes) -> str:
        """Store an object; return its path on the target filesystem."""
        if self.name == "http":
            assert self.server is not None
            return self.server.put(f"{self.root}/{name}", data)
        path = f"{self.root}/{name}"
        self.target.pipe_file(path, data)
        self.target.invalidate_cache()
        return path

    def url(self, path: str) -> str:
        """The fsspec URL of an object stored with :meth:`put`."""
        return path if self.name == "http" else self.target.unstrip_protocol(path)

    def counted(self, **options: Any) -> tuple[fsspec.AbstractFileSystem, CountingFileSystem]:
        """A ``dicom`` filesystem over a request-counting wrapper of the target."""
        counting = CountingFileSystem(fs=self.target)
        return fsspec.filesystem(
            "dicom", fs=counting, skip_instance_cache=True, **options
        ), counting


@pytest.fixture(scope="session")
def http_server() -> Iterator[RangeHTTPServer]:
    with RangeHTTPServer() as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield endpoint


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    with gcs_emulator() as endpoint:
        fsspec.filesystem("gcs", **_gcs_options(endpoint)).mkdir(BUCKET)
        yield endpoint


@pytest.fixture(scope="session")
def azure_connection() -> Iterator[str]:
    with azurite() as connection:
        fsspec.filesystem("az", **_az_options(connection)).mkdir(BUCKET)
        yield connection


def _gcs_options(endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": endpoint, "token": "anon", "skip_instance_cache": True}


def _az_options(connection: str) -> dict[str, Any]:
    return {"connection_string": connection, "skip_instance_cache": True}


def _s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        "skip_instance_cache": True,
        "use_listings_cache": False,
    }


BACKENDS = ["memory", "file", "http", "s3", "gcs", "azure"]


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path_factory: Any) -> Backend:
    unique = uuid.uuid4().hex[:8]
    if name == "memory":
        return Backend(name, fsspec.filesystem("memory"), f"/t{unique}", {})
    if name == "file":
        root = tmp_path_factory.mktemp("objects").as_posix()
        return Backend(name, fsspec.filesystem("file"), root, {})
    if name == "http":
        server = request.getfixturevalue("http_server")
        return Backend(
            name, fsspec.filesystem("http", skip_instance_cache=True), unique, {}, server
        )
    if name == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        options = _s3_options(endpoint)
        return Backend(
            name, fsspec.filesystem("s3", **options), f"{BUCKET}/{unique}", {"s3": options}
        )
    if name == "gcs":
        options = _gcs_options(request.getfixturevalue("gcs_endpoint"))
        return Backend(
            name, fsspec.filesystem("gcs", **options), f"{BUCKET}/{unique}", {"gs": options}
        )  # the protocol of its URLs
    if name == "azure":
        options = _az_options(request.getfixturevalue("azure_connection"))
        return Backend(
            name, fsspec.filesystem("az", **options), f"{BUCKET}/{unique}", {"abfs": options}
        )  # the protocol of its URLs
    raise ValueError(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Backend:
    """Each storage backend in turn."""
    return make_backend(request.param, request, tmp_path_factory)


@pytest.fixture
def counting_fetch() -> Callable[[bytes], Any]:
    """Return ``(fetch, log)`` over a blob, logging every ``(start, stop)``."""

    def make(blob: bytes) -> Any:
        log: list[tuple[int, int]] = []

        def fetch(start: int, stop: int) -> bytes:
            log.append((start, stop))
            return blob[start:stop]

        def fetch_ranges(ranges: Any) -> list[bytes]:
            return [fetch(a, b) for a, b in ranges]

        return fetch, fetch_ranges, log

    return make

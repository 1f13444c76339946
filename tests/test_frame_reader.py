"""DicomFrameReader is highdicom's ImageFileReader: colour, filename and errors alike.

Each object is read through the ``dicom`` filesystem and, as a local copy, by
highdicom's own reader; every read is counted (requests and bytes).
"""

from __future__ import annotations

import io
import logging
import pickle
import struct

import fsspec
import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import saved
from highdicom.io import ImageFileReader
from PIL import ImageCms

import hdfsspec
from hdfsspec.highdicom import _adapter
from hdfsspec.highdicom.readers import DicomFrameReader
from hdfsspec.testing import CountingFileSystem, build_native, build_slide, jpeg_tiles


def _swapped_primaries() -> bytes:
    """Pillow's sRGB profile with its red and green primaries swapped: a colour
    transform that shows (it swaps the red and green of each pixel)."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack_from(">I", profile, 128)  # the tag table follows the header
    tags = {}
    for k in range(count):
        signature, offset, size = struct.unpack_from(">4sII", profile, 132 + 12 * k)
        tags[signature] = slice(offset, offset + size)
    red, green = tags[b"rXYZ"], tags[b"gXYZ"]
    profile[red], profile[green] = profile[green], profile[red]
    return bytes(profile)


PROFILE = _swapped_primaries()
RGB = np.random.default_rng(5).integers(0, 256, (4, 24, 40, 3), dtype=np.uint8)


def _with_icc(blob: bytes, where: str | None, profile: bytes = PROFILE) -> bytes:
    """``blob`` with an ICC profile at the top level, in the optical path, or none."""
    ds = pydicom.dcmread(io.BytesIO(blob))
    if where == "top":
        ds.ICCProfile = profile
    elif where == "optical-path":
        ds.OpticalPathSequence[0].ICCProfile = profile
    return saved(ds)


NATIVE = _with_icc(build_native(RGB), "top")  # 4 RGB frames of 2,880 bytes
SLIDE = _with_icc(build_slide(128, 128, tile=64, tiles=jpeg_tiles(3, 64, 3)), "optical-path")
OBJECTS = {"native-icc-top": NATIVE, "jpeg-slide-icc-optical-path": SLIDE}


def _opened(name: str, blob: bytes) -> tuple[DicomFrameReader, CountingFileSystem]:
    memory = fsspec.filesystem("memory")
    memory.pipe(f"/frame-reader/{name}", blob)
    target = CountingFileSystem(fs=memory)
    dfs = fsspec.filesystem("dicom", fs=target, skip_instance_cache=True, first_request=2048)
    return DicomFrameReader(dfs.open(f"/frame-reader/{name}")), target


def _local(tmp_path, name: str, blob: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(blob)
    return str(path)


@pytest.mark.parametrize("name", OBJECTS)
def test_read_frame_corrects_colour_as_highdicom_does(tmp_path, name):
    """correct_color=True (highdicom's default) on a colour image with an ICC profile,
    at the top level or in the optical path: highdicom's pixels, each frame fetched once."""
    blob = OBJECTS[name]
    reader, target = _opened(name, blob)
    with reader, ImageFileReader(_local(tmp_path, name, blob)) as expected:
        assert target.requests == 1 and target.bytes == 2048  # the header
        n = expected.number_of_frames
        assert reader.number_of_frames == n == 4
        for i in range(n):
            raw = reader.read_frame_raw(i)
            assert raw == expected.read_frame_raw(i)
            corrected = reader.read_frame(i)
            np.testing.assert_array_equal(corrected, expected.read_frame(i))
            uncorrected = reader.read_frame(i, correct_color=False)
            np.testing.assert_array_equal(uncorrected, expected.read_frame(i, correct_color=False))
            np.testing.assert_array_equal(corrected, uncorrected[..., [1, 0, 2]])  # swapped
        # a request a frame at most, each frame's bytes once (with the next item's header)
        frames = reader.file.stats.phases["frames"]
        assert 1 <= frames.requests <= n and target.requests == 1 + frames.requests
        assert target.bytes <= len(blob) + 8 * n
        fetched = target.requests
        np.testing.assert_array_equal(reader.read_frame(n - 1), expected.read_frame(n - 1))
        assert target.requests == fetched  # cached
    reader.close()
    # the image over such a reader: highdicom's pixels, its ICC profile applied too
    with hdfsspec.imread(f"memory:///frame-reader/{name}", {"first_request": 2048}) as im:
        got = im.get_frame(2)
        assert im.file.stats.requests == 2 and im.file.stats.phases["frames"].requests == 1
    np.testing.assert_array_equal(got, hd.imread(io.BytesIO(blob)).get_frame(2))


def test_the_reader_has_highdicom_s_state_but_where_the_frames_lie(tmp_path):
    """What highdicom's reader holds after reading a frame, this one holds too, but for
    the offsets its own read_frame_raw reads (a new attribute of a highdicom release,
    which its read_frame would need, fails here)."""
    reader, target = _opened("state.dcm", NATIVE)
    with reader, ImageFileReader(_local(tmp_path, "state.dcm", NATIVE)) as expected:
        np.testing.assert_array_equal(reader.read_frame(1), expected.read_frame(1))
        assert target.requests == 2 and target.bytes <= len(NATIVE)
        missing = set(vars(expected)) - set(vars(reader))
        assert missing <= _adapter.NOT_GIVEN, missing - _adapter.NOT_GIVEN
        assert reader.transfer_syntax_uid == expected.transfer_syntax_uid
        assert reader.metadata.SOPInstanceUID == expected.metadata.SOPInstanceUID
        assert "PixelData" not in reader.metadata and "PixelData" not in expected.metadata
        # pickled with its file (reopened where unpickled), the colour transform built again
        copy = pickle.loads(pickle.dumps(reader))
        np.testing.assert_array_equal(copy.read_frame(2), expected.read_frame(2))
        stats = copy.file.stats  # its own open, through its own (unpickled) filesystem
        assert stats.requests == 2 and stats.bytes <= len(NATIVE) and target.requests == 2
        copy.close()
    reader.close()


@pytest.mark.parametrize(
    ("name", "blob", "notice"),
    [
        ("no-icc.dcm", build_native(RGB), "no ICC Profile found in image metadata."),
        ("bad-icc.dcm", _with_icc(build_native(RGB), "top", b"not a profile"), "could not read"),
    ],
)
def test_a_colour_image_without_a_usable_profile_logs_and_refuses_as_highdicom(
    tmp_path, caplog, name, blob, notice
):
    """No ICC profile, or one that cannot be read: highdicom's notices (under its own
    logger) and its ValueError for correct_color=True; the frame without correction."""
    caplog.set_level(logging.WARNING, logger="highdicom")
    outcomes = []
    local = _local(tmp_path, name, blob)
    for make in (lambda: _opened(name, blob)[0], lambda: ImageFileReader(local)):
        caplog.clear()
        with make() as reader:
            with pytest.raises(ValueError, match="Cannot correct color of frame #0") as err:
                reader.read_frame(0)
            frame = reader.read_frame(0, correct_color=False)
        reader.close()
        logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
        outcomes.append((str(err.value), logged, frame))
        if isinstance(reader, DicomFrameReader):  # the header, then frame 0 once
            stats = reader.file.stats
            assert stats.requests == 2 and stats.phases["frames"].requests == 1
            assert stats.bytes - 2048 <= stats.phases["frames"].bytes <= RGB[0].nbytes
    (message, logged, frame), (message_hd, logged_hd, frame_hd) = outcomes
    assert message == message_hd and logged == logged_hd
    assert any(notice in m for _, level, m in logged if level == logging.WARNING)
    np.testing.assert_array_equal(frame, frame_hd)
    np.testing.assert_array_equal(frame, RGB[0])


@pytest.mark.parametrize("index", [-1, 4, 10**6, 2.5, np.float64(1.0), "1", None])
@pytest.mark.parametrize("method", ["read_frame_raw", "read_frame"])
def test_a_bad_frame_index_raises_highdicom_s_error_and_fetches_nothing(tmp_path, method, index):
    reader, target = _opened("bad-index.dcm", NATIVE)
    with ImageFileReader(_local(tmp_path, "bad-index.dcm", NATIVE)) as expected:
        with pytest.raises((ValueError, TypeError)) as hd_error:
            getattr(expected, method)(index)
    with reader:
        with pytest.raises((ValueError, TypeError)) as error:
            getattr(reader, method)(index)
        assert target.requests == 1 and target.bytes == 2048  # the header, and no frame
    reader.close()
    assert type(error.value) is type(hd_error.value)
    assert str(error.value) == str(hd_error.value)


def test_filename_is_highdicom_s_for_a_local_file_and_the_url_otherwise(tmp_path, http_server):
    path = _local(tmp_path, "named.dcm", NATIVE)
    local = fsspec.filesystem("dicom", target_protocol="file", skip_instance_cache=True)
    with DicomFrameReader(local.open(path)) as reader, ImageFileReader(path) as expected:
        assert reader.filename == expected.filename == path
        assert reader.file.stats.requests == 1 and reader.file.stats.bytes == len(NATIVE)
    reader.close()
    with hdfsspec.imread(path) as im:  # the image's, as highdicom's lazy imread gives it
        assert im.filename == hd.imread(path, lazy_frame_retrieval=True).filename == path
        assert im.file.stats.requests == 1 and im.file.stats.bytes == len(NATIVE)
    reader, target = _opened("named.dcm", NATIVE)
    with reader:
        assert reader.filename == "memory:///frame-reader/named.dcm"  # no local path: the URL
        assert target.requests == 1 and target.bytes == 2048
    reader.close()
    query = "?X-Amz-Credential=AKIA1%2Fx&X-Amz-Expires=60&X-Amz-Signature=beef"
    url = http_server.put("frame-reader/named.dcm", NATIVE) + query
    http_server.log.clear()
    with hdfsspec.imread(url) as im:
        assert im.filename == url.replace("AKIA1%2Fx", "REDACTED").replace("beef", "REDACTED")
        assert http_server.log.bytes == len(NATIVE)  # HEAD, then the whole (small) object

"""Data sets deflated as a whole: no frame byte ranges, so highdicom's readers read them whole."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import saved
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

import hdfsspec
from hdfsspec.highdicom.readers import DicomImage, DicomSegmentation
from hdfsspec.testing import build_native, build_seg

FIRST_REQUEST = 64 * 1024
ARRAY = np.random.default_rng(3).integers(0, 4096, (8, 96, 96), dtype=np.uint16)
LARGE = build_native(ARRAY, transfer_syntax=DeflatedExplicitVRLittleEndian)  # random: ~127 KB
SMALL = Path(get_testdata_file("image_dfl.dcm")).read_bytes()  # 4.6 KB


def test_corpus_is_what_the_tests_say():
    assert len(LARGE) > FIRST_REQUEST > len(SMALL)
    for blob in (LARGE, SMALL):
        assert pydicom.dcmread(io.BytesIO(blob)).file_meta.TransferSyntaxUID.is_deflated


@pytest.mark.parametrize("name", ["small", "large"])
def test_imread_reads_a_deflated_image_whole(backend, name):
    """The bytes of the open are not fetched again: one request for the rest, if any."""
    blob = SMALL if name == "small" else LARGE
    path = backend.put(f"deflated-{name}.dcm", blob)
    fs, counting = backend.counted(first_request=FIRST_REQUEST)
    f = fs.open(path)
    im = hdfsspec.imread(f)
    # the same class as a lazy read, its frames in memory: with, close and plan work
    assert isinstance(im, DicomImage) and im.file is None
    assert f.closed
    assert counting.requests == (1 if len(blob) <= FIRST_REQUEST else 2)
    assert counting.bytes == len(blob)
    expected = pydicom.dcmread(io.BytesIO(blob)).pixel_array
    got = np.stack([im.get_stored_frame(i) for i in range(1, im.number_of_frames + 1)])
    np.testing.assert_array_equal(got, expected.reshape(got.shape))
    plan = im.plan("get_frames", [1])
    assert plan.frames == (0,) and plan.requests == 0 and plan.nbytes == 0
    with im:
        pass
    assert counting.requests == (1 if len(blob) <= FIRST_REQUEST else 2)  # none for frames


def test_segread_reads_a_deflated_segmentation_whole(http_server):
    seg = build_seg(slices=4, segments=3, rows=32, cols=32)[0]
    blob = saved(pydicom.dcmread(io.BytesIO(seg)), DeflatedExplicitVRLittleEndian)
    url = http_server.put("deflated-seg.dcm", blob)
    http_server.log.clear()
    seg = hdfsspec.segread(url)
    assert isinstance(seg, DicomSegmentation) and seg.file is None
    assert http_server.log.bytes == len(blob) and http_server.log.requests <= 2
    expected = hd.seg.segread(io.BytesIO(blob)).get_volume(segment_numbers=[2]).array
    np.testing.assert_array_equal(seg.get_volume(segment_numbers=[2]).array, expected)


def test_frame_reads_still_refuse_a_deflated_data_set(backend):
    """``read_frames`` gives byte ranges of the object: a deflated one has none."""
    path = backend.put("deflated-frames.dcm", LARGE)
    fs, counting = backend.counted(first_request=FIRST_REQUEST)
    with fs.open(path) as f:
        with pytest.raises(hdfsspec.UnsupportedTransferSyntaxError, match="deflated") as err:
            f.read_frames([0])
        assert err.value.tag == 0x00020010 and err.value.path
        assert f.read() == LARGE  # bytes stay readable
    assert counting.requests == 2 and counting.bytes == len(LARGE)

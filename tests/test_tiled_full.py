"""The tile positions of TILED_FULL images, a plane at a time (hdfsspec.highdicom._tiled_full),
and highdicom's frame tables built with them: the same rows, values and types as
highdicom's own generator and tables, for every kind of image it takes.

The time saved is measured in ``benchmarks/`` (the first region of a new process)."""

from __future__ import annotations

import io
from typing import Any

import highdicom as hd
import highdicom.image as hd_image
import highdicom.spatial as hd_spatial
import numpy as np
import pytest
from pydicom.dataset import Dataset

import hdfsspec
import hdfsspec.highdicom.readers  # installs the quick tile positions
from hdfsspec.highdicom._tiled_full import tiled_full_frame_data
from hdfsspec.testing import build_slide

SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP = "1.2.840.10008.5.1.4.1.1.66.7"
PARAMETRIC = "1.2.840.10008.5.1.4.1.1.30"


def _dataset(uid: str = SLIDE, **attrs: Any) -> Dataset:
    """The attributes the tile positions are computed from; ``attrs`` override them
    (None deletes one)."""
    ds = Dataset()
    ds.SOPClassUID = uid
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.Rows, ds.Columns = 256, 128
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = 1000, 700  # partial last tiles
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = "10.5"
    origin.YOffsetInSlideCoordinateSystem = "-3.25"
    ds.TotalPixelMatrixOriginSequence = [origin]
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    measures = Dataset()
    measures.PixelSpacing = ["0.000251", "0.0005"]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.OpticalPathSequence = [Dataset()]
    ds.SegmentSequence = [Dataset(), Dataset(), Dataset()]
    for name, value in attrs.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    return ds


def _spaced(between: str) -> Dataset:
    ds = _dataset(TotalPixelMatrixFocalPlanes=3)
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices = between
    return ds


CASES = {
    "slide": _dataset(),
    "two optical paths": _dataset(NumberOfOpticalPaths=2),
    "paths listed, not counted": _dataset(OpticalPathSequence=[Dataset(), Dataset()]),
    "three focal planes": _dataset(TotalPixelMatrixFocalPlanes=3, NumberOfOpticalPaths=2),
    "spaced focal planes": _spaced("0.002"),
    "rotated": _dataset(ImageOrientationSlide=[1, 0, 0, 0, 1, 0]),
    "oblique": _dataset(ImageOrientationSlide=[0.6, 0.8, 0, -0.8, 0.6, 0]),
    "one tile": _dataset(TotalPixelMatrixRows=100, TotalPixelMatrixColumns=100),
    "whole tiles": _dataset(TotalPixelMatrixRows=1024, TotalPixelMatrixColumns=640),
    "segmentation": _dataset(SEG),
    "label map": _dataset(LABELMAP),
    "parametric map": _dataset(PARAMETRIC),
    "no optical path": _dataset(NumberOfOpticalPaths=0),
}


@pytest.mark.parametrize("ds", CASES.values(), ids=CASES.keys())
def test_the_rows_are_highdicom_s(ds):
    ours = list(tiled_full_frame_data(ds))
    theirs = list(hd_spatial.iter_tiled_full_frame_data(ds))
    assert ours == theirs
    assert [tuple(map(type, r)) for r in ours] == [tuple(map(type, r)) for r in theirs]


ERRORS = {
    "tiled sparse": _dataset(DimensionOrganizationType="TILED_SPARSE"),
    "no organisation": _dataset(DimensionOrganizationType=None),
    "another SOP class": _dataset("1.2.840.10008.5.1.4.1.1.2"),
    "counted, not listed": _dataset(NumberOfOpticalPaths=1, OpticalPathSequence=None),
    "no origin": _dataset(TotalPixelMatrixOriginSequence=None),
    "no pixel measures": _dataset(SharedFunctionalGroupsSequence=[Dataset()]),
}


@pytest.mark.parametrize("ds", ERRORS.values(), ids=ERRORS.keys())
def test_what_highdicom_refuses_it_refuses_the_same_way(ds):
    with pytest.raises(Exception) as theirs:  # whatever highdicom raises
        list(hd_spatial.iter_tiled_full_frame_data(ds))
    with pytest.raises(type(theirs.value)) as ours:
        list(tiled_full_frame_data(ds))
    assert str(ours.value) == str(theirs.value)


def test_highdicom_image_computes_them_so():
    assert hd_image.iter_tiled_full_frame_data is tiled_full_frame_data
    assert hd_spatial.iter_tiled_full_frame_data is not tiled_full_frame_data  # its own


@pytest.mark.parametrize("table", ["bot", "empty"])
def test_frame_tables_equal_those_highdicom_builds_alone(tmp_path, monkeypatch, table):
    """Built with the quick tile positions and hdfsspec's faster rows, the tables equal
    those highdicom builds with its own generator and values."""
    blob = build_slide(1100, 900, tile=128, offset_table=table)
    path = tmp_path / "slide.dcm"
    path.write_bytes(blob)
    fs = hdfsspec.DicomFileSystem(index_cache=False)
    with hdfsspec.imread(fs.open(str(path))) as ours:
        monkeypatch.setattr(
            hd_image, "iter_tiled_full_frame_data", hd_spatial.iter_tiled_full_frame_data
        )
        theirs = hd.imread(io.BytesIO(blob), lazy_frame_retrieval=True)
        assert list(ours._db_con.iterdump()) == list(theirs._db_con.iterdump())
        region = {"row_start": 100, "row_end": 700, "column_start": 33, "column_end": 801}
        np.testing.assert_array_equal(
            ours.get_total_pixel_matrix(**region), theirs.get_total_pixel_matrix(**region)
        )
        stats = ours.file.stats  # the open's request, then the region's frames at once
        assert stats.requests <= 2 and stats.bytes < len(blob)

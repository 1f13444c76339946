"""DicomFile.frame_table: every frame's data offset and length, and its tile, as pydicom
and highdicom see the same bytes; the requests it costs; the same table whatever was read."""

from __future__ import annotations

import io
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_fragmented_frames, parse_fragments

import hdfsspec
from hdfsspec.testing import (
    build_encapsulated,
    build_native,
    build_slide,
    fake_jpeg_frames,
    jpeg_tiles,
)

pd = pytest.importorskip("pandas")

TILE = 64
TILES = jpeg_tiles(7, TILE, 3, seed=11)
FIRST = 16384  # the open's request (conftest: 64 KiB), so that frames lie beyond it
SLIDE_ROWS, SLIDE_COLS = 5 * TILE - 3, 6 * TILE - 10  # 5 x 6 tiles


def _slide(table: str, **kwargs) -> bytes:
    return build_slide(
        SLIDE_ROWS, SLIDE_COLS, tile=TILE, tiles=TILES, offset_table=table, **kwargs
    )


FRAGMENTED = fake_jpeg_frames(20, seed=4, min_size=1500, max_size=2500)
OBJECTS = {
    "bot": _slide("bot"),
    "eot": _slide("eot"),
    "empty": _slide("empty"),
    "tiff": _slide("empty", dual_tiff=True),
    "sparse": _slide("bot", sparse=True),
    "fragmented": build_encapsulated(FRAGMENTED, offset_table="bot", fragments_per_frame=3),
    "native": build_native(np.arange(6 * 40 * 30, dtype=np.uint16).reshape(6, 40, 30) % 4001),
}
KIND = {"bot": "bot", "eot": "eot", "empty": "scan", "tiff": "tiff", "sparse": "bot"}
KIND.update(fragmented="bot", native="native")


def pydicom_table(blob: bytes) -> pd.DataFrame:
    """The oracle: offsets and lengths from pydicom's parse of the bytes, tiles from
    highdicom's TILED_FULL positions or the per-frame positions of the data set."""
    ds = pydicom.dcmread(io.BytesIO(blob))
    n = int(ds.get("NumberOfFrames", 1))
    value_at = ds["PixelData"].file_tell
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        value = ds.PixelData
        first = 8 + int.from_bytes(value[4:8], "little")  # past the Basic Offset Table item
        _, positions = parse_fragments(value[first:])
        extended = None
        if "ExtendedOffsetTable" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        frames = list(
            generate_fragmented_frames(value, number_of_frames=n, extended_offsets=extended)
        )
        offsets, lengths, k = [], [], 0
        for fragments in frames:  # the frame's items, in order
            start = value_at + first + positions[k] + 8
            last = value_at + first + positions[k + len(fragments) - 1] + 8
            offsets.append(start)
            lengths.append(last + len(fragments[-1]) - start)
            k += len(fragments)
    else:
        size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
        offsets = [value_at + i * size for i in range(n)]
        lengths = [size] * n
    table = {"frame_number": np.arange(1, n + 1), "offset": offsets, "length": lengths}
    if "TotalPixelMatrixRows" in ds:
        if ds.DimensionOrganizationType == "TILED_FULL":
            positions = [(p[3], p[2]) for p in hd.utils.iter_tiled_full_frame_data(ds)]
        else:
            planes = [f.PlanePositionSlideSequence[0] for f in ds.PerFrameFunctionalGroupsSequence]
            positions = [
                (p.RowPositionInTotalImagePixelMatrix, p.ColumnPositionInTotalImagePixelMatrix)
                for p in planes
            ]
        table["tile_row"] = [(r - 1) // ds.Rows + 1 for r, _ in positions]
        table["tile_column"] = [(c - 1) // ds.Columns + 1 for _, c in positions]
    return pd.DataFrame(table).astype("int64")


def _put(backend, name: str) -> str:
    return backend.put(f"{name}.dcm", OBJECTS[name])


def _open(backend, path: str, **options):
    fs, counting = backend.counted(first_request=FIRST, **options)
    return fs.open(path), counting


@pytest.mark.parametrize("name", list(OBJECTS))
def test_table_equals_pydicom_s_parse(name, request, tmp_path_factory):
    from conftest import make_backend

    backend = make_backend("s3", request, tmp_path_factory)
    blob = OBJECTS[name]
    path = _put(backend, name)
    f, counting = _open(backend, path)
    with f:
        table = f.frame_table()
        assert f.index.offset_table == KIND[name]
        stats = f.stats.as_dict()  # before the read below
        requests = counting.requests
        # the frames' data, as read_frames gives it (one fragment a frame; the fragments
        # of a frame of several, with the item headers between them)
        k = int(table.frame_number.iloc[-1]) - 1
        start, length = int(table.offset.iloc[-1]), int(table.length.iloc[-1])
        if name != "fragmented":
            assert blob[start : start + length] == f.read_frames([k])[0]
    pd.testing.assert_frame_equal(table, pydicom_table(blob))
    assert stats["header"]["requests"] == 1  # the open
    assert requests == stats["requests"]  # what the target served
    frames, index = stats["frames"], stats["index"]
    if name in ("eot", "native"):  # all in the open's request
        assert stats["requests"] == 1
    elif name in ("bot", "sparse", "fragmented"):  # the last frame's end: one request at it
        assert frames["requests"] == 1 and index["requests"] == 0
        last = int(table.offset.iloc[-1]) - 8
        assert frames["bytes"] <= len(blob) - last
    elif name == "tiff":  # the IFD and its arrays at the end of the object
        assert index["requests"] <= 2 and frames["requests"] == 0
        assert index["bytes"] < len(blob) // 10
    else:  # no table: a walk of every item, in one window here
        assert index["requests"] == 1 and frames["requests"] == 0
        assert index["bytes"] == len(blob) - FIRST


@pytest.mark.parametrize("name", ["bot", "empty", "tiff"])
def test_table_is_the_same_whatever_was_read_before(name, backend, tmp_path):
    path = _put(backend, name)
    f, _ = _open(backend, path)
    with f:
        first = f.frame_table()
    f, _ = _open(backend, path)
    with f:
        f.read_frames([3, 17])  # part of a walk, frames cached
        after_reads = f.frame_table()
        list(f.iter_frames())  # every frame
        after_all = f.frame_table()
    pd.testing.assert_frame_equal(after_reads, first)
    pd.testing.assert_frame_equal(after_all, first)
    # a reopen with the persisted index: the table costs no request beyond the open
    store = str(tmp_path / "index")
    f, _ = _open(backend, path, index_cache=store)
    with f:
        f.frame_table()
    f, counting = _open(backend, path, index_cache=store)
    with f:
        opened = counting.requests
        again = f.frame_table()
        assert counting.requests == opened and f.stats.requests == 0
    pd.testing.assert_frame_equal(again, first)
    pd.testing.assert_frame_equal(first, pydicom_table(OBJECTS[name]))


def test_no_pixel_data_gives_an_empty_table(tmp_path):
    from hdfsspec.testing import build_sr

    path = tmp_path / "sr.dcm"
    path.write_bytes(build_sr())
    with hdfsspec.open_dicom(str(path)) as f:
        table = f.frame_table()
        assert f.stats.requests == 1
    assert list(table.columns) == ["frame_number", "offset", "length"] and table.empty


def test_without_pandas_the_error_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "slide.dcm"
    path.write_bytes(OBJECTS["bot"])
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with hdfsspec.open_dicom(str(path)) as f:
        with pytest.raises(ImportError, match=r"hdfsspec\[pandas\]"):
            f.frame_table()
        assert f.stats.requests == 0  # refused before any read

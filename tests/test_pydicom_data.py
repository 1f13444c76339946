"""Every multi-frame or encapsulated file of pydicom-data, read over every backend.

Frames read through ``dicom::`` must equal pydicom's extraction from a local copy,
and decode to pydicom's pixel array where pydicom can decode the file here.
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pydicom
import pytest
from oracle import decode, decoded_reference, reference_frames

import hdfsspec


def _files() -> list[pathlib.Path]:
    import data_store

    root = pathlib.Path(data_store.__file__).parent
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            syntax = ds.file_meta.TransferSyntaxUID
        except Exception:  # not DICOM, or no file meta: not part of this corpus
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) > 1 or syntax.is_encapsulated:
            out.append(path)
    return out


FILES = _files()
# pydicom cannot read this one at all (its delimiter is cut off); hdfsspec reads its frames.
NO_ORACLE = {"emri_small_jpeg_2k_lossless_too_short.dcm"}


def test_corpus_is_not_empty():
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_frames_equal_local_pydicom(backend, path):
    blob = path.read_bytes()
    stored = backend.put(path.name, blob)
    fs, counting = backend.counted()
    with fs.open(stored) as f:
        n = f.index.number_of_frames
        frames = f.read_frames(list(range(n)))
        # one request for the header, at most two rounds for the frames (last frame's end)
        assert counting.requests <= 1 + 2 + (f.index.offset_table == "scan") * 4
        assert counting.bytes <= len(blob) + 8 * n + 1
    if path.name in NO_ORACLE:
        assert n == 10 and all(fr[:2] == b"\xff\x4f" for fr in frames)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vendor quirks pydicom warns about
        assert frames == reference_frames(blob)


DECODABLE = [p for p in FILES if p.name not in NO_ORACLE]


@pytest.mark.parametrize("path", DECODABLE, ids=lambda p: p.name)
def test_decoded_frames_equal_pydicom_pixel_array(path):
    blob = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = decoded_reference(blob)
        except Exception as exc:  # no decoder for this syntax installed here
            pytest.skip(f"pydicom cannot decode {path.name} here: {exc}")
        with hdfsspec.open_dicom(str(path)) as f:
            frames = f.read_frames(list(range(f.index.number_of_frames)))
            offsets = [f.index.bit_offset(i) for i in range(len(frames))]
        for i, raw in enumerate(frames):
            got = decode(raw, blob, i, offsets[i])
            assert np.array_equal(got, expected[i].reshape(got.shape)), f"frame {i}"

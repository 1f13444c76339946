"""Every multi-frame or encapsulated file of pydicom-data, read over every backend.

Frames read through ``dicom::`` must equal pydicom's extraction from a local copy,
and decode to pydicom's pixel array where pydicom can decode the file here.
"""

from __future__ import annotations

import pathlib
import warnings

import fsspec
import numpy as np
import pydicom
import pytest
from oracle import decode, decoded_reference, reference_frames

import hdfsspec
from hdfsspec import DicomFormatError, TruncatedDicomError, UnsupportedTransferSyntaxError
from hdfsspec.testing import CountingFileSystem


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
# pydicom cannot read this one at all: it is cut after an item, its delimiter lost. hdfsspec
# reads the frames that the next frame's item vouches for and refuses the last one.
NO_ORACLE = {"emri_small_jpeg_2k_lossless_too_short.dcm"}


def _read_cut(f, n: int, size: int) -> list[bytes]:
    """The frames of a file cut after an item: all but the last, which is refused."""
    frames = f.read_frames(list(range(n - 1)))
    with pytest.raises(TruncatedDicomError, match="Sequence Delimitation Item") as refused:
        f.read_frames([n - 1])
    assert refused.value.offset == size and refused.value.path
    return frames


def test_corpus_is_not_empty():
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_frames_equal_local_pydicom(backend, path):
    blob = path.read_bytes()
    stored = backend.put(path.name, blob)
    fs, counting = backend.counted()
    with fs.open(stored) as f:
        n = f.index.number_of_frames
        cut = path.name in NO_ORACLE
        frames = _read_cut(f, n, len(blob)) if cut else f.read_frames(list(range(n)))
        # one request for the header, at most two rounds for the frames (last frame's end)
        assert counting.requests <= 1 + 2 + (f.index.offset_table == "scan") * 4 + cut
        assert counting.bytes <= (1 + cut) * len(blob) + 8 * n + 1
    if cut:
        assert n == 10 and all(fr[:2] == b"\xff\x4f" for fr in frames)
        assert all(fr.rstrip(b"\x00").endswith(b"\xff\xd9") for fr in frames)
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


def _every_image() -> list[pathlib.Path]:
    """Every file with pixel data in pydicom-data and in pydicom's own test files."""
    import data_store

    roots = [pathlib.Path(data_store.__file__).parent, pathlib.Path(pydicom.__file__).parent]
    out = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix in {".py", ".pyc", ".json", ".txt", ".gz", ".bz2", ".zip"}:
                continue
            head = path.read_bytes()[:132]
            if len(head) < 132 or head[128:132] != b"DICM":
                continue
            if any(k in path.read_bytes() for k in (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00")):
                out.append(path)
    return out


EVERY_IMAGE = _every_image()
# files that hdfsspec must refuse with a typed error (pydicom reads what is there)
REFUSED = {
    "MR_truncated.dcm": TruncatedDicomError,  # Pixel Data ends beyond the object
    "image_dfl.dcm": UnsupportedTransferSyntaxError,  # deflated: no frame byte ranges
}


def test_every_image_corpus_is_not_empty():
    assert len(EVERY_IMAGE) >= 150


@pytest.mark.parametrize("path", EVERY_IMAGE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_image_equals_pydicom_or_is_refused_with_a_typed_error(path):
    """All frames of any Part 10 image (single-frame and native too) equal pydicom's."""
    blob = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vendor quirks pydicom warns about
        try:
            expected = reference_frames(blob)
        except Exception as exc:  # pydicom cannot read it: hdfsspec must say why
            expected = exc
        memory = fsspec.filesystem("memory", skip_instance_cache=True)
        memory.pipe_file(f"/every/{path.name}", blob)
        counting = CountingFileSystem(fs=memory)
        fs = fsspec.filesystem("dicom", fs=counting, skip_instance_cache=True)
        try:
            with fs.open(f"/every/{path.name}") as f:
                n = f.index.number_of_frames
                if path.name in NO_ORACLE:
                    got = _read_cut(f, n, len(blob))
                else:
                    got = f.read_frames(list(range(n)))
                scanned = f.index.offset_table == "scan"
                large_header = f.index.header_end > 64 * 1024  # grows: 1-2 more requests
        except DicomFormatError as exc:
            assert path.name not in NO_ORACLE
            assert isinstance(exc, REFUSED.get(path.name, DicomFormatError))
            assert isinstance(expected, Exception) or path.name in REFUSED, exc
            assert exc.path and exc.offset is not None
            return
        finally:
            memory.rm(f"/every/{path.name}")
    assert path.name not in REFUSED
    if path.name in NO_ORACLE:
        assert isinstance(expected, Exception) and len(got) == n - 1
        return
    assert got == expected
    # a whole read after the last frame's end was found may read that frame twice
    assert counting.bytes <= 1.05 * len(blob) + 8 * n + 1
    assert counting.requests <= 1 + 2 + scanned * 4 + large_header * 2

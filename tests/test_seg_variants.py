"""Segmentations of every kind through hdfsspec: BINARY, FRACTIONAL and LABELMAP, native and
compressed, every pixel call of highdicom's Segmentation, against local highdicom.

Each call must give highdicom's own values, fetch its frames in one round, and cost what
its dry run (``plan``) says, in requests and in bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import fsspec
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

import hdfsspec
from hdfsspec.testing import CountingFileSystem
from hdfsspec.testing.objects import build_ct_series, segmentation

T = hd.seg.SegmentationTypeValues
SLICES, ROWS, COLS, SEGMENTS = 12, 40, 36, 4  # 40 x 36: binary frames end mid-byte
SOURCES = [pydicom.dcmread(io.BytesIO(b)) for b in build_ct_series(SLICES, ROWS, COLS, seed=1)]
UIDS = [ds.SOPInstanceUID for ds in SOURCES]


def _labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = np.zeros((SLICES, ROWS, COLS), np.uint8)
    for s in range(1, SEGMENTS + 1):
        z = int(rng.integers(0, SLICES - 4))
        labels[z : z + 4, 5 * s : 5 * s + 10, 3 * s : 3 * s + 12] = s
    return labels


def _build(kind: T, syntax: str, omit_empty: bool) -> bytes:
    labels = _labels()
    pixels: np.ndarray = labels
    extra: dict[str, Any] = {}
    if kind == T.FRACTIONAL:
        pixels = np.stack([(labels == s) * 0.5 for s in range(1, SEGMENTS + 1)], -1)
        pixels = pixels.astype(np.float32)
        extra["max_fractional_value"] = 255
    return segmentation(
        SOURCES,
        pixels,
        SEGMENTS,
        segmentation_type=kind,
        transfer_syntax_uid=syntax,
        omit_empty_frames=omit_empty,
        **extra,
    )


VARIANTS = {
    "binary": (T.BINARY, ExplicitVRLittleEndian, True),
    "binary-all-frames": (T.BINARY, ExplicitVRLittleEndian, False),
    "binary-implicit": (T.BINARY, ImplicitVRLittleEndian, True),
    "binary-j2k": (T.BINARY, JPEG2000Lossless, True),
    "fractional": (T.FRACTIONAL, ExplicitVRLittleEndian, True),
    "fractional-rle": (T.FRACTIONAL, RLELossless, True),
    "labelmap": (T.LABELMAP, ExplicitVRLittleEndian, True),
    "labelmap-rle": (T.LABELMAP, RLELossless, True),
    "labelmap-jpegls": (T.LABELMAP, JPEGLSLossless, True),
}

# each call as (method name, positional args, keyword args); combined segments only where
# highdicom allows them (not on a FRACTIONAL segmentation without rescaling)
CALLS: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "volume": ("get_volume", (), {}),
    "volume 2 segments": ("get_volume", (), {"segment_numbers": [1, 4]}),
    "volume unscaled": ("get_volume", (), {"rescale_fractional": False}),
    "by instance": ("get_pixels_by_source_instance", (UIDS[2:7],), {"segment_numbers": [2]}),
    "by instance, any location": (
        "get_pixels_by_source_instance",
        (UIDS,),
        {"ignore_spatial_locations": True},
    ),
    "by dimension index": (
        "get_pixels_by_dimension_index_values",
        ([[s] for s in range(1, SEGMENTS + 1)],),
        {},
    ),
    "frames": ("get_frames", (), {}),
    "stored frames": ("get_stored_frames", (), {}),
}
COMBINED: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "volume combined": ("get_volume", (), {"segment_numbers": [2, 3], "combine_segments": True}),
    "by instance combined": (
        "get_pixels_by_source_instance",
        (UIDS[:6],),
        {"combine_segments": True, "relabel": True},
    ),
}


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def variant(request) -> tuple[str, bytes, hd.seg.Segmentation]:
    blob = _build(*VARIANTS[request.param])
    return request.param, blob, hd.seg.segread(io.BytesIO(blob))


def _open(name: str, blob: bytes) -> tuple[Any, CountingFileSystem]:
    memory = fsspec.filesystem("memory")
    memory.pipe(f"/variants/{name}.dcm", blob)
    target = CountingFileSystem(fs=memory)
    dfs = fsspec.filesystem("dicom", fs=target, skip_instance_cache=True, first_request=4096)
    return hdfsspec.segread(dfs.open(f"/variants/{name}.dcm")), target


def _calls(name: str) -> dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]]:
    return CALLS if name.startswith("fractional") else {**CALLS, **COMBINED}


def _run(obj: Any, call: tuple[str, tuple[Any, ...], dict[str, Any]]) -> np.ndarray:
    method, args, kwargs = call
    out: Callable[..., Any] = getattr(obj, method)
    result = out(*args, **kwargs)
    return result.array if isinstance(result, hd.Volume) else result


@pytest.mark.parametrize("call", list({**CALLS, **COMBINED}))
def test_each_pixel_call_is_one_planned_round_equal_to_local(variant, call):
    name, blob, expected_seg = variant
    if call not in _calls(name):
        pytest.skip("highdicom combines the segments of a FRACTIONAL segmentation only rescaled")
    spec = _calls(name)[call]
    seg, target = _open(f"{name}-{call}", blob)
    with seg:
        opened, opened_bytes, opened_rounds = target.requests, target.bytes, target.rounds
        plan = seg.plan(spec[0], *spec[1], **spec[2])
        assert (target.requests, target.rounds) == (opened, opened_rounds)  # a dry run
        got = _run(seg, spec)
        assert target.rounds - opened_rounds == (1 if plan.requests else 0)
        assert target.requests - opened == plan.requests
        assert target.bytes - opened_bytes == plan.nbytes <= len(blob)
        assert plan.frames  # every call here needs frames
        again = target.requests
        np.testing.assert_array_equal(_run(seg, spec), got)  # cached now: no request
        assert target.requests == again
    expected = _run(expected_seg, spec)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_labelmap_frames_hold_labels_not_bits(variant):
    """A LABELMAP frame is one byte a pixel whatever its syntax; a BINARY native one is a bit
    a pixel and ends mid-byte (40 x 36 = 1440 bits): the index gives each its own span."""
    name, blob, _ = variant
    seg, target = _open(f"{name}-index", blob)
    with seg:
        opened = target.requests
        index = seg.file.index
        assert index.number_of_frames == seg.number_of_frames
        if name in ("binary", "binary-all-frames", "binary-implicit"):
            assert index.offset_table == "native" and index.bits_per_frame == ROWS * COLS
            assert int(index.stops[0]) - int(index.starts[0]) == -(-ROWS * COLS // 8)
        elif name == "labelmap":
            assert index.bits_per_frame == 8 * ROWS * COLS
            assert set((index.stops - index.starts).tolist()) == {ROWS * COLS}
        # native: from the header; encapsulated: the Basic Offset Table read by the open
        assert target.requests == opened

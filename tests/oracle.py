"""The correctness oracle: what pydicom (and highdicom's decoder) make of a local copy."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import unpack_bits

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_local(blob: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(blob), force=True)


def pixel_keyword(ds: pydicom.Dataset) -> str:
    return next(k for k in PIXEL_KEYWORDS if k in ds)


def reference_frames(blob: bytes) -> list[bytes]:
    """Encoded frames as pydicom extracts them from the whole file in memory."""
    ds = read_local(blob)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    keyword = pixel_keyword(ds)
    value = getattr(ds, keyword)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(value, number_of_frames=n))
    samples = 2 if ds.PhotometricInterpretation == "YBR_FULL_422" else ds.SamplesPerPixel
    bits = ds.Rows * ds.Columns * samples * ds.BitsAllocated
    return [value[(i * bits) // 8 : ((i + 1) * bits + 7) // 8] for i in range(n)]


def decoded_reference(blob: bytes) -> np.ndarray:
    """pydicom's pixel array, always with a frame axis."""
    ds = read_local(blob)
    arr = ds.pixel_array
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return arr[None] if n == 1 else arr


def decode(raw: bytes, blob: bytes, index: int, bit_offset: int = 0) -> np.ndarray:
    """Decode one encoded frame with pydicom, as a one-frame copy of the local file."""
    ds = read_local(blob)
    keyword = pixel_keyword(ds)
    syntax = ds.file_meta.TransferSyntaxUID
    if ds.BitsAllocated == 1 and not syntax.is_encapsulated:
        n = ds.Rows * ds.Columns * ds.SamplesPerPixel
        return unpack_bits(raw)[bit_offset : bit_offset + n].reshape(ds.Rows, ds.Columns)
    ds.NumberOfFrames = 1
    setattr(ds, keyword, encapsulate([raw]) if syntax.is_encapsulated else raw)
    return ds.pixel_array

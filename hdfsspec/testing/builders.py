"""Synthetic DICOM objects for tests, benchmarks and downstream users.

Every builder returns the bytes of a valid Part 10 file, built with pydicom's
writers and ``encaps`` helpers, so the same bytes can be read locally by
pydicom (the oracle) and remotely through ``dicom::``.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, itemize_frame
from pydicom.filewriter import dcmwrite
from pydicom.pixels import pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

__all__ = [
    "OffsetTable",
    "build_encapsulated",
    "build_native",
    "build_slide",
    "fake_jpeg_frames",
    "jpeg_tiles",
]

OffsetTable = Literal["bot", "eot", "eot-no-lengths", "empty"]
SECONDARY_CAPTURE_MF_BYTE = "1.2.840.10008.5.1.4.1.1.7.2"
SECONDARY_CAPTURE_MF_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"


def _base(sop_class: str, syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "Synthetic^Test"
    ds.PatientID = "hdfsspec"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"
    ds.Manufacturer = "hdfsspec"
    return ds


def _image_attrs(
    ds: Dataset, n: int, rows: int, cols: int, samples: int, bits: int, photometric: str | None
) -> None:
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0


def _write(ds: Dataset, preamble: bool = True, trailing: bytes = b"") -> bytes:
    buf = io.BytesIO()
    syntax = ds.file_meta.TransferSyntaxUID
    if preamble:
        ds.preamble = b"\x00" * 128
        dcmwrite(buf, ds, enforce_file_format=True)
    else:
        dcmwrite(buf, ds, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian)
    return buf.getvalue() + trailing


def fake_jpeg_frames(
    n: int, *, seed: int = 0, min_size: int = 64, max_size: int = 512
) -> list[bytes]:
    """Random even-length byte strings framed by JPEG SOI/EOI markers (not decodable)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        body = rng.integers(0, 256, int(rng.integers(min_size, max_size)) // 2 * 2, dtype=np.uint8)
        body[body == 0xFF] = 0xFE  # no stray markers inside
        frames.append(b"\xff\xd8" + body.tobytes() + b"\xff\xd9")
    return frames


def jpeg_tiles(
    count: int,
    size: int = 64,
    samples: int = 1,
    *,
    seed: int = 0,
    quality: int = 90,
    noise: int = 32,
) -> list[bytes]:
    """Encode ``count`` distinct random tiles as baseline JPEG (needs Pillow).

    ``noise`` (0-255) sets how much random texture each tile has, and so its size.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    tiles = []
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(count):
        base = (xx * (k + 1) + yy * (2 * k + 3)) % 256
        texture = rng.integers(0, max(1, noise), (size, size))
        plane = ((base + texture) % 256).astype(np.uint8)
        arr = np.stack([plane, plane[::-1], plane[:, ::-1]], -1) if samples == 3 else plane
        out = io.BytesIO()
        Image.fromarray(arr).save(out, format="JPEG", quality=quality)
        data = out.getvalue()
        tiles.append(data + b"\x00" * (len(data) % 2))
    return tiles


def build_encapsulated(
    frames: Sequence[bytes],
    *,
    rows: int = 16,
    cols: int = 16,
    samples: int = 1,
    offset_table: OffsetTable = "bot",
    fragments_per_frame: int = 1,
    transfer_syntax: str = JPEGBaseline8Bit,
    photometric: str | None = None,
    sop_class: str = SECONDARY_CAPTURE_MF_BYTE,
    trailing: bytes = b"",
    dataset: Dataset | None = None,
    dual_tiff: bool = False,
) -> bytes:
    """Return a file with encapsulated ``frames`` laid out as asked.

    Parameters
    ----------
    frames : sequence of bytes
        Encoded frames (even lengths).
    offset_table : {"bot", "eot", "eot-no-lengths", "empty"}
        Which offset table to write: a Basic Offset Table, an Extended Offset
        Table (with an empty BOT, with or without its lengths) or none at all.
    fragments_per_frame : int
        Split each frame into this many fragments (BOT and empty layouts only).
    trailing : bytes
        Raw bytes appended after the Pixel Data (e.g. a trailing padding element).
    dataset : pydicom.Dataset, optional
        A prepared data set (with file meta) to fill instead of a new one.
    dual_tiff : bool
        Write a dual-personality DICOM-TIFF file (Clunie, J Pathol Inform 2019;10:12):
        the preamble starts with a classic little-endian TIFF header pointing at an IFD
        held, with its out-of-line arrays, in a Data Set Trailing Padding (FFFC,FFFC)
        element at the end; its TileOffsets point at the fragment item values. Needs
        ``offset_table="empty"``, one fragment per frame and no ``trailing``.
    """
    if dual_tiff and (offset_table != "empty" or fragments_per_frame != 1 or trailing):
        raise ValueError(
            "dual_tiff needs offset_table='empty', fragments_per_frame=1 and no trailing bytes"
        )
    ds = dataset if dataset is not None else _base(sop_class, transfer_syntax)
    if dataset is None:
        _image_attrs(ds, len(frames), rows, cols, samples, 8, photometric)
        if transfer_syntax == JPEGBaseline8Bit and samples == 3 and photometric is None:
            ds.PhotometricInterpretation = "YBR_FULL_422"
    if offset_table in ("eot", "eot-no-lengths"):
        data, offsets, lengths = encapsulate_extended(list(frames))
        ds.ExtendedOffsetTable = offsets
        if offset_table == "eot":
            ds.ExtendedOffsetTableLengths = lengths
    elif fragments_per_frame == 1:
        data = encapsulate(list(frames), has_bot=offset_table == "bot")
    else:
        data = _encapsulate_fragmented(frames, fragments_per_frame, offset_table == "bot")
    ds.PixelData = data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _write_dual_tiff(ds) if dual_tiff else _write(ds, trailing=trailing)


_ITEM = b"\xfe\xff\x00\xe0"
_PIXEL_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_TIFF_PHOTOMETRIC = {"MONOCHROME1": 0, "MONOCHROME2": 1, "RGB": 2, "PALETTE COLOR": 3}


def _write_dual_tiff(ds: Dataset) -> bytes:
    """Write ``ds`` (encapsulated, empty BOT) with a TIFF IFD in its trailing padding.

    A first write gives the fragment item offsets; the padding element (whose size
    depends only on the number of frames) then follows the Pixel Data, its value
    starting with the IFD, then the TileOffsets, TileByteCounts and BitsPerSample
    arrays; the second write only adds it and the TIFF header in the preamble.
    """
    probe = _write(ds)
    value = len(probe) - len(_SEQUENCE_DELIMITER) - len(ds.PixelData)
    if probe[value - 12 : value] != _PIXEL_HEADER or not probe.endswith(_SEQUENCE_DELIMITER):
        raise ValueError("dual_tiff: the Pixel Data must be the last element of the data set")
    pos = value + 8 + int.from_bytes(probe[value + 4 : value + 8], "little")  # skip the BOT
    offsets, counts = [], []
    while probe[pos : pos + 4] == _ITEM:
        counts.append(int.from_bytes(probe[pos + 4 : pos + 8], "little"))
        offsets.append(pos + 8)
        pos += 8 + counts[-1]
    n, rows, cols, samples = len(offsets), ds.Rows, ds.Columns, ds.SamplesPerPixel
    width = int(ds.get("TotalPixelMatrixColumns", cols))
    length = int(ds.get("TotalPixelMatrixRows", rows * n))  # else frames stacked vertically
    if -(-width // cols) * -(-length // rows) != n:
        raise ValueError(f"dual_tiff: {n} frames do not tile a {width}x{length} image")
    photometric = _TIFF_PHOTOMETRIC.get(ds.PhotometricInterpretation, 6)  # YBR_* -> YCbCr
    ifd = len(probe) + 12  # the padding value: IFD, offsets, counts, bits per sample
    arrays = ifd + 2 + 10 * 12 + 4
    total = arrays - ifd + 8 * n + (2 * samples if samples > 1 else 0)
    if arrays + 8 * n + 2 * samples > 0xFFFFFFFF:
        raise ValueError("dual_tiff: classic TIFF offsets need a file under 4 GiB")

    def entry(tag: int, kind: int, values: Sequence[int], at: int) -> bytes:
        code = "H" if kind == 3 else "L"
        raw = struct.pack(f"<{len(values)}{code}", *values)
        inline = raw.ljust(4, b"\x00") if len(raw) <= 4 else struct.pack("<L", at)
        return struct.pack("<HHL", tag, kind, len(values)) + inline

    bits_at = arrays + 8 * n
    entries = [
        entry(256, 4, [width], 0),
        entry(257, 4, [length], 0),
        entry(258, 3, [8] * samples, bits_at),
        entry(259, 3, [7], 0),  # JPEG
        entry(262, 3, [photometric], 0),
        entry(277, 3, [samples], 0),
        entry(322, 4, [cols], 0),
        entry(323, 4, [rows], 0),
        entry(324, 4, offsets, arrays),
        entry(325, 4, counts, arrays + 4 * n),
    ]
    padding = bytearray(total + total % 2)
    body = struct.pack("<H", len(entries)) + b"".join(entries) + b"\x00" * 4
    body += struct.pack(f"<{n}L{n}L", *offsets, *counts)
    body += struct.pack(f"<{samples}H", *[8] * samples) if samples > 1 else b""
    padding[: len(body)] = body
    ds.add_new(0xFFFCFFFC, "OB", bytes(padding))
    ds.preamble = b"II*\x00" + struct.pack("<L", ifd) + b"\x00" * 120
    try:
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
    finally:
        del ds[0xFFFCFFFC]
    blob = buf.getvalue()
    if blob[128 : len(probe)] != probe[128:] or len(blob) != ifd + len(padding):
        raise ValueError("dual_tiff: the trailing padding moved the Pixel Data")
    return blob


def _encapsulate_fragmented(frames: Sequence[bytes], nfrag: int, has_bot: bool) -> bytes:
    items = [b"".join(itemize_frame(f, nfrag)) for f in frames]
    offsets = np.cumsum([0] + [len(i) for i in items[:-1]]).astype("<u4")
    bot = offsets.tobytes() if has_bot else b""
    head = b"\xfe\xff\x00\xe0" + len(bot).to_bytes(4, "little") + bot
    return head + b"".join(items)


def build_native(
    array: np.ndarray,
    *,
    bits: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_keyword: str = "PixelData",
    photometric: str | None = None,
    preamble: bool = True,
    trailing: bytes = b"",
) -> bytes:
    """Return a file whose native Pixel Data holds ``array`` (frames, rows, cols[, samples]).

    ``bits=1`` packs a boolean array into 1-bit Pixel Data (frames need not end on a
    byte boundary). Float arrays go to ``FloatPixelData`` / ``DoubleFloatPixelData``
    when ``pixel_keyword`` says so. Explicit VR Big Endian swaps the bytes.
    """
    arr = np.asarray(array)
    n, rows, cols = arr.shape[:3]
    samples = arr.shape[3] if arr.ndim == 4 else 1
    bits = bits or arr.dtype.itemsize * 8
    sop = SECONDARY_CAPTURE_MF_WORD if bits > 8 else SECONDARY_CAPTURE_MF_BYTE
    ds = _base(sop, transfer_syntax)
    _image_attrs(ds, n, rows, cols, samples, bits, photometric)
    if bits == 1:
        value = pack_bits(arr.astype(np.uint8).ravel(), pad=True)
        ds.PixelData = value
        ds["PixelData"].VR = "OB"
        return _write(ds, preamble, trailing)
    if pixel_keyword != "PixelData":
        for attr in ("BitsStored", "HighBit", "PixelRepresentation"):
            delattr(ds, attr)
    big = transfer_syntax == ExplicitVRBigEndian
    value = arr.astype(arr.dtype.newbyteorder(">" if big else "<")).tobytes()
    setattr(ds, pixel_keyword, value + b"\x00" * (len(value) % 2))
    if pixel_keyword == "PixelData":
        ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    return _write(ds, preamble, trailing)


def build_slide(
    total_rows: int,
    total_cols: int,
    *,
    tile: int = 256,
    tiles: Sequence[bytes] | None = None,
    offset_table: OffsetTable = "bot",
    samples: int = 3,
    dual_tiff: bool = False,
    sparse: bool = False,
) -> bytes:
    """Return a TILED_FULL VL Whole Slide Microscopy image of JPEG tiles.

    Tiles cycle through ``tiles`` (a few distinct encoded tiles keep generation
    cheap, whatever the slide size). ``dual_tiff`` (with ``offset_table="empty"``)
    makes it a dual-personality DICOM-TIFF file, see :func:`build_encapsulated`.
    ``sparse`` makes it TILED_SPARSE instead: each frame's position is in its item of
    the Per-Frame Functional Groups Sequence (all tiles present, in row-major order).
    """
    rows_t, cols_t = -(-total_rows // tile), -(-total_cols // tile)
    tiles = list(tiles) if tiles is not None else jpeg_tiles(7, tile, samples)
    frames = [tiles[(i * 5 + i // cols_t) % len(tiles)] for i in range(rows_t * cols_t)]
    ds = _base(VL_WSI, JPEGBaseline8Bit)
    ds.Modality = "SM"
    _image_attrs(
        ds, len(frames), tile, tile, samples, 8, "YBR_FULL_422" if samples == 3 else "MONOCHROME2"
    )
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.BurnedInAnnotation = "NO"
    ds.SpecimenLabelInImage = "NO"
    ds.LossyImageCompression = "01"
    ds.FrameOfReferenceUID = generate_uid()
    ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = total_rows, total_cols
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = [origin]
    measures = Dataset()
    measures.PixelSpacing = [0.00025, 0.00025]
    measures.SliceThickness = 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    ds.OpticalPathSequence = [path]
    if sparse:
        ds.DimensionIndexSequence = [
            _dimension(0x0048021E, "PlanePositionSlideSequence"),  # column position
            _dimension(0x0048021F, "PlanePositionSlideSequence"),  # row position
        ]
        ds.PerFrameFunctionalGroupsSequence = [
            _tile_position(i // cols_t, i % cols_t, tile) for i in range(len(frames))
        ]
    return build_encapsulated(frames, offset_table=offset_table, dataset=ds, dual_tiff=dual_tiff)


def _tile_position(row: int, col: int, tile: int) -> Dataset:
    """A TILED_SPARSE frame's functional groups: where its tile lies (1-based pixels)."""
    position = Dataset()
    position.RowPositionInTotalImagePixelMatrix = 1 + row * tile
    position.ColumnPositionInTotalImagePixelMatrix = 1 + col * tile
    position.XOffsetInSlideCoordinateSystem = 20.0 - 0.00025 * row * tile
    position.YOffsetInSlideCoordinateSystem = 40.0 - 0.00025 * col * tile
    position.ZOffsetInSlideCoordinateSystem = 0.0
    content = Dataset()
    content.DimensionIndexValues = [col + 1, row + 1]
    item = Dataset()
    item.PlanePositionSlideSequence = [position]
    item.FrameContentSequence = [content]
    return item


def _dimension(pointer: int, group: str) -> Dataset:
    """An item of the Dimension Index Sequence."""
    item = Dataset()
    item.DimensionIndexPointer = pointer
    item.FunctionalGroupPointer = tag_for_keyword(group)
    return item

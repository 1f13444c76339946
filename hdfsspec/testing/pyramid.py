"""A synthetic whole-slide pyramid: one series of VOLUME levels, a label and an overview."""

from __future__ import annotations

import io
from collections.abc import Mapping

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hdfsspec.testing.builders import build_slide, jpeg_tiles

__all__ = ["build_pyramid"]

_SPACING = 0.00025  # mm per pixel of level 0, as build_slide writes it


def _in_series(
    blob: bytes,
    series: Mapping[str, str],
    image_type: str,
    number: int,
    spacing: float,
    native: bool,
) -> bytes:
    """``blob`` (one of :func:`build_slide`) moved into ``series``, as an image of
    ``image_type`` with pixel spacing ``spacing`` (mm); ``native``: its tiles decoded,
    stored uncompressed as RGB."""
    ds = pydicom.dcmread(io.BytesIO(blob))
    if native:
        frames = ds.pixel_array  # decoded as RGB
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PhotometricInterpretation = "RGB"
        ds.LossyImageCompression = "01"
        ds.PixelData = frames.tobytes()
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = False
    for keyword, uid in series.items():
        setattr(ds, keyword, uid)
    flavour = "ORIGINAL" if image_type in ("LABEL", "OVERVIEW") else "DERIVED"
    ds.ImageType = [flavour, "PRIMARY", image_type, "NONE"]
    ds.InstanceNumber = number
    ds.SpecimenLabelInImage = "YES" if image_type in ("LABEL", "OVERVIEW") else "NO"
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    measures.PixelSpacing = [spacing, spacing]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def build_pyramid(
    width: int,
    height: int,
    *,
    levels: int = 3,
    tile: int = 64,
    label: bool = True,
    overview: bool = True,
    thumbnail: bool = False,
    native: bool = False,
    seed: int = 0,
) -> dict[str, bytes]:
    """Return the instances of one whole-slide series: ``levels`` pyramid levels and more.

    Level ``k`` is a TILED_FULL VL Whole Slide Microscopy image of
    ``ceil(width / 2**k) x ceil(height / 2**k)`` pixels (JPEG tiles of ``tile``
    pixels, distinct from one level to the next; the pixel spacing doubles per
    level). All instances share the study, series and frame of reference.

    Parameters
    ----------
    width, height : int
        Size of level 0 in pixels.
    levels : int
        Number of VOLUME images.
    tile : int
        Tile size in pixels.
    label, overview, thumbnail : bool
        Whether to add a LABEL, an OVERVIEW or a THUMBNAIL image (one tile each,
        as OpenSlide reads them).
    native : bool
        Store the tiles uncompressed (RGB, Explicit VR Little Endian), their pixels
        those of the JPEG tiles decoded: every decoder then reads the same values.
    seed : int
        Seed of the tiles' texture.

    Returns
    -------
    dict of str to bytes
        ``"level-0.dcm"`` ... ``"level-<levels - 1>.dcm"``, ``"label.dcm"``,
        ``"overview.dcm"``, ``"thumbnail.dcm"`` as asked.
    """
    series = {
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
    }
    out: dict[str, bytes] = {}
    for k in range(levels):
        w, h = -(-width // 2**k), -(-height // 2**k)
        tiles = jpeg_tiles(5, tile, 3, seed=seed * 100 + k)
        blob = build_slide(h, w, tile=tile, tiles=tiles)
        out[f"level-{k}.dcm"] = _in_series(blob, series, "VOLUME", k + 1, _SPACING * 2**k, native)
    extra = [("label", label, "LABEL"), ("overview", overview, "OVERVIEW")]
    extra.append(("thumbnail", thumbnail, "THUMBNAIL"))
    for n, (name, wanted, image_type) in enumerate(extra):
        if wanted:
            tiles = jpeg_tiles(1, tile, 3, seed=seed * 100 + 50 + n)
            blob = build_slide(tile, tile, tile=tile, tiles=tiles)
            out[f"{name}.dcm"] = _in_series(
                blob, series, image_type, levels + n + 1, _SPACING * 8, native
            )
    return out

"""Pixels to PNG: the values highdicom decodes, written without rescaling.

The commands ask highdicom for the stored values (no modality, VOI or real-world
transform: those give floats a PNG cannot hold), as 8-bit or 16-bit integers after
the colour steps highdicom applies by default (palette colour lookup, ICC profile).
Pillow writes them: ``L`` (grey, 8 bits), ``I;16`` (grey, 16 bits), ``RGB`` and
``RGBA`` (8 bits).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hdfsspec.cli.options import CommandError, UsageError

__all__ = ["decode_options", "png_mode", "write_png"]


def decode_options(dataset: Any) -> dict[str, Any]:
    """Keyword arguments of highdicom's pixel calls for values a PNG holds.

    Raises
    ------
    UsageError
        For signed or floating-point pixels, or more than 16 bits.
    """
    if any(k in dataset for k in ("FloatPixelData", "DoubleFloatPixelData")):
        raise UsageError("floating-point pixels cannot be written as PNG")
    bits = int(dataset.get("BitsAllocated", 8) or 8)
    if int(dataset.get("PixelRepresentation", 0) or 0) != 0:
        raise UsageError("signed pixel values cannot be written as PNG")
    if bits > 16:
        raise UsageError(f"{bits}-bit pixels cannot be written as PNG (16 bits at most)")
    return {
        "dtype": np.uint8 if bits <= 8 else np.uint16,
        "apply_real_world_transform": False,
        "apply_modality_transform": False,
        "apply_voi_transform": False,
    }


_MODES = {
    (np.dtype(np.uint8), 1): "L",
    (np.dtype(np.uint16), 1): "I;16",
    (np.dtype(np.uint8), 3): "RGB",
    (np.dtype(np.uint8), 4): "RGBA",
}


def png_mode(pixels: np.ndarray) -> str:
    """Pillow's mode for ``pixels`` (rows x columns, with samples last if several).

    Raises
    ------
    UsageError
        For arrays a PNG of Pillow cannot hold (16-bit colour, 2 samples...).
    """
    samples = pixels.shape[2] if pixels.ndim == 3 else 1
    mode = _MODES.get((pixels.dtype, samples)) if pixels.ndim in (2, 3) else None
    if mode is None:
        raise UsageError(
            f"pixels of shape {pixels.shape} and type {pixels.dtype} cannot be written as PNG"
        )
    return mode


def write_png(pixels: np.ndarray, path: str | os.PathLike[str]) -> str:
    """Write ``pixels`` (one sample a pixel may have a last axis of 1) to ``path`` as
    PNG; return Pillow's mode."""
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - Pillow comes with the jpeg extra
        raise CommandError("writing PNG needs Pillow: pip install 'hdfsspec[jpeg]'") from error
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    mode = png_mode(pixels)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")
    return mode

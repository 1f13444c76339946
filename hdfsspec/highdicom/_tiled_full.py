"""highdicom's positions of the tiles of a TILED_FULL image, a plane at a time.

``Image.from_dataset`` builds the frame table of a TILED_FULL image (a whole-slide
level, a tiled segmentation) from ``iter_tiled_full_frame_data``, a generator that
converts and yields one tile at a time: 40 ms of the 0.14 s that a new process's
``imread`` of a 24,649-tile slide took. :func:`tiled_full_frame_data` computes the same
values with the same numpy calls (one per focal plane, not per tile) and hands them
over as columns zipped into rows; :func:`quick_tiled_full` makes ``highdicom.image``
call it. For any data set it does not compute in full (another SOP class, a missing
attribute, another organisation), highdicom's own function answers, with its own
values or errors. ``tests/test_tiled_full.py`` compares the two on images of every
kind the function takes, with the installed highdicom (its function is the same in
0.28.1 and 0.28.2, the versions ``pyproject.toml`` allows).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain, repeat
from typing import Any

import highdicom.image as hd_image
import highdicom.spatial as hd_spatial
import numpy as np
from pydicom.dataset import Dataset

__all__ = ["quick_tiled_full", "tiled_full_frame_data"]

Row = tuple[int | None, int, int, int, float, float, float]
"""(channel, focal plane, column position, row position, x, y, z), as highdicom yields."""

_NO_CHANNEL = frozenset({"1.2.840.10008.5.1.4.1.1.66.7", "1.2.840.10008.5.1.4.1.1.30"})
"""Label Map Segmentation and Parametric Map: no channel (None for every frame)."""
_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image


def _channels(dataset: Dataset) -> list[int | None] | None:
    """The channels, as highdicom numbers them; None for a SOP class it refuses."""
    uid = dataset.SOPClassUID
    if uid in _NO_CHANNEL:
        return [None]
    if uid == _SEGMENTATION:
        return list(range(1, len(dataset.SegmentSequence) + 1))
    if uid == _SLIDE:
        listed = len(dataset.OpticalPathSequence)  # asked first, as highdicom does
        return list(range(1, getattr(dataset, "NumberOfOpticalPaths", listed) + 1))
    return None


def _columns(dataset: Dataset) -> list[list[Any]] | None:
    """The seven columns of highdicom's rows; None where highdicom's function must answer."""
    channels = _channels(dataset)
    if channels is None or getattr(dataset, "DimensionOrganizationType", None) != "TILED_FULL":
        return None
    origin = dataset.TotalPixelMatrixOriginSequence[0]
    orientation = tuple(float(dataset.ImageOrientationSlide[i]) for i in range(6))
    planes = getattr(dataset, "TotalPixelMatrixFocalPlanes", 1)
    measures = dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    spacing = (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1]))
    between = float(getattr(measures, "SpacingBetweenSlices", 1.0))
    rows, columns = dataset.Rows, dataset.Columns
    across = (dataset.TotalPixelMatrixColumns - 1) // columns + 1
    down = (dataset.TotalPixelMatrixRows - 1) // rows + 1
    # as highdicom's compute_tile_positions_per_frame: (c, r) pixel indices, row by row
    tiles = np.stack(np.meshgrid(range(across), range(down), indexing="xy")).reshape(2, -1).T
    pixels = tiles * [columns, rows]
    n = len(pixels)
    column_of, row_of = (pixels + 1).T.tolist()  # 1-based
    x: list[float] = []
    y: list[float] = []
    z: list[float] = []
    position = (origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem)
    for plane in range(1, planes + 1):
        transformer = hd_spatial.PixelToReferenceTransformer(
            image_position=(*position, float(plane - 1) * between),
            image_orientation=orientation,
            pixel_spacing=spacing,
        )
        px, py, pz = transformer(pixels).T.tolist()
        x += px
        y += py
        z += pz
    each = len(channels)
    return [
        list(chain.from_iterable(repeat(c, n * planes) for c in channels)),
        list(chain.from_iterable(repeat(p, n) for p in range(1, planes + 1))) * each,
        column_of * (planes * each),
        row_of * (planes * each),
        x * each,
        y * each,
        z * each,
    ]


def tiled_full_frame_data(dataset: Dataset) -> Iterator[Row]:
    """``highdicom.spatial.iter_tiled_full_frame_data``, computed a plane at a time.

    Parameters
    ----------
    dataset : pydicom.Dataset
        A TILED_FULL VL Whole Slide Microscopy Image, Segmentation or Parametric Map.

    Returns
    -------
    Iterator of tuple
        highdicom's rows, in its order and with its values and types: (channel,
        focal plane, column position, row position, x, y, z) for each frame. Where
        the data set is not one it computes in full, highdicom's own generator.
    """
    try:
        columns = _columns(dataset)
    except Exception:
        columns = None
    if columns is None:
        return hd_spatial.iter_tiled_full_frame_data(dataset)
    return zip(*columns, strict=True)


def quick_tiled_full() -> None:
    """Make ``highdicom.image`` compute tile positions with :func:`tiled_full_frame_data`.

    The values are highdicom's own, for every caller of ``highdicom.image`` in the
    process; other modules of highdicom keep calling its generator.
    """
    hd_image.iter_tiled_full_frame_data = tiled_full_frame_data  # type: ignore[assignment]

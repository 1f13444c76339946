"""highdicom's per-frame data of a TILED_FULL image, the same values, made in bulk.

``Image.from_dataset`` builds its frame table from
:func:`highdicom.spatial.iter_tiled_full_frame_data`, a generator that yields one
tuple a frame: 40 ms of Python for a slide level of 24,649 tiles, on the critical path
of every first open. :func:`tiled_full_frame_data` computes the same tuples as
highdicom does (the same arguments to highdicom's own vectorised
:func:`~highdicom.spatial.compute_tile_positions_per_frame`, the same conversions),
a whole focal plane at a time; :func:`quick_tiled_full_frame_data` puts it in place
of the name ``highdicom.image`` calls, once, process-wide. An object it does not know
(another SOP class, not TILED_FULL) goes to highdicom's own, which answers or raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from typing import Any

import highdicom.image as hd_image
from highdicom.spatial import compute_tile_positions_per_frame, iter_tiled_full_frame_data
from pydicom.dataset import Dataset

__all__ = ["quick_tiled_full_frame_data", "tiled_full_frame_data"]

_NO_CHANNEL = ("1.2.840.10008.5.1.4.1.1.66.7", "1.2.840.10008.5.1.4.1.1.30")
"""Label Map Segmentation, Parametric Map: no channel (highdicom yields None)."""
_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"

Frame = tuple[int | None, int, int, int, float, float, float]


def _channels(dataset: Dataset) -> Iterable[int | None] | None:
    """The channels highdicom iterates (segments, optical paths), or None: not known here."""
    uid = dataset.SOPClassUID
    if uid in _NO_CHANNEL:
        return [None]
    if uid == _SEGMENTATION:
        return range(1, len(dataset.SegmentSequence) + 1)
    if uid == _WHOLE_SLIDE:  # highdicom's default is evaluated first, as here
        paths = getattr(dataset, "NumberOfOpticalPaths", len(dataset.OpticalPathSequence))
        return range(1, paths + 1)
    return None


def tiled_full_frame_data(dataset: Dataset) -> Iterator[Frame]:
    """:func:`highdicom.spatial.iter_tiled_full_frame_data`, the tuples made in bulk.

    Parameters
    ----------
    dataset : pydicom.Dataset
        A TILED_FULL whole slide image, segmentation or parametric map.

    Returns
    -------
    iterator of tuple
        ``(channel, focal plane, column, row, x, y, z)`` per frame, as highdicom yields
        them.
    """
    channels = _channels(dataset)
    if channels is None or getattr(dataset, "DimensionOrganizationType", None) != "TILED_FULL":
        return iter_tiled_full_frame_data(dataset)  # highdicom's own answer, or its error
    origin = dataset.TotalPixelMatrixOriginSequence[0]
    orientation = tuple(float(dataset.ImageOrientationSlide[i]) for i in range(6))
    planes = getattr(dataset, "TotalPixelMatrixFocalPlanes", 1)
    measures = dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    spacing = (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1]))
    between = float(getattr(measures, "SpacingBetweenSlices", 1.0))
    x, y = origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem
    shape = (dataset.Rows, dataset.Columns, dataset.TotalPixelMatrixRows)
    columns = dataset.TotalPixelMatrixColumns
    parts = []
    for plane in range(1, planes + 1):
        positions = compute_tile_positions_per_frame(
            rows=shape[0],
            columns=shape[1],
            total_pixel_matrix_rows=shape[2],
            total_pixel_matrix_columns=columns,
            total_pixel_matrix_image_position=(x, y, float(plane - 1) * between),
            image_orientation=orientation,
            pixel_spacing=spacing,
        )
        parts.append((plane, _columns(positions)))
    return chain.from_iterable(
        zip(repeat(channel), repeat(plane), *data) for channel in channels for plane, data in parts
    )


def _columns(positions: list[tuple[list[int], list[float]]]) -> list[list[Any]]:
    """Column, row, x, y, z of each tile, converted as highdicom converts them."""
    offsets = [o for o, _ in positions]
    coords = [c for _, c in positions]
    return [
        [int(o[0]) for o in offsets],
        [int(o[1]) for o in offsets],
        [float(c[0]) for c in coords],
        [float(c[1]) for c in coords],
        [float(c[2]) for c in coords],
    ]


def quick_tiled_full_frame_data() -> None:
    """Let ``highdicom.image`` build TILED_FULL frame tables from
    :func:`tiled_full_frame_data` (once, for every caller in the process)."""
    if getattr(hd_image.iter_tiled_full_frame_data, "_hdfsspec", False):
        return
    tiled_full_frame_data.__dict__["_hdfsspec"] = True
    hd_image.iter_tiled_full_frame_data = tiled_full_frame_data  # type: ignore[assignment]

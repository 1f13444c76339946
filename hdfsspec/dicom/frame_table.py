"""The per-frame table's columns: where each frame's data lies and which tile it is.

Pure: from a complete :class:`~hdfsspec.dicom.index.FrameIndex` (its last frame's end
known) and the header's data set; :meth:`hdfsspec.DicomFile.frame_table` makes the
pandas DataFrame of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.errors import FrameIndexError

__all__ = ["ITEM_HEADER", "frame_columns", "tile_positions"]

ITEM_HEADER = 8
"""Bytes of a fragment item's tag and length, before its value."""


def frame_columns(index: FrameIndex, dataset: Dataset) -> dict[str, np.ndarray]:
    """The columns of the frame table, in order.

    ``frame_number`` (1-based, as DICOM counts), ``offset`` (absolute byte offset of
    the frame's data: its first fragment's value, after the 8-byte item header, or the
    first byte of its native pixels), ``length`` (bytes from ``offset`` to the end of
    the frame's last fragment value, or the native frame's bytes: 1-bit frames may share
    their first and last bytes, see :meth:`FrameIndex.bit_offset`), then ``tile_row``
    and ``tile_column`` (1-based, as highdicom counts tiles) for a tiled image (see
    :func:`tile_positions`).

    Raises
    ------
    FrameIndexError
        When the last frame's end is not known (the caller resolves it first).
    """
    n = index.number_of_frames
    if n and int(index.stops[-1]) == UNKNOWN:
        last = int(index.starts[-1])
        raise FrameIndexError("the end of the last frame is not known yet", offset=last)
    head = ITEM_HEADER if index.encapsulated else 0
    offset = index.starts + head
    columns = {
        "frame_number": np.arange(1, n + 1, dtype=np.int64),
        "offset": offset,
        "length": index.stops - offset,
    }
    tiles = tile_positions(dataset, n)
    if tiles is not None:
        columns["tile_row"], columns["tile_column"] = tiles
    return columns


def tile_positions(dataset: Dataset, frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The 1-based tile row and column of each frame of a tiled image, or None.

    A tiled image has a Total Pixel Matrix. TILED_FULL (or no per-frame functional
    groups): frames go along each row of tiles, then down the rows, then through the
    focal planes and optical paths (whose frames repeat the positions). TILED_SPARSE:
    from each frame's Plane Position (Slide) (Row / Column Position In Total Image
    Pixel Matrix), read from the header already in memory; 0 where a frame gives none.
    """
    if "TotalPixelMatrixRows" not in dataset or "TotalPixelMatrixColumns" not in dataset:
        return None
    rows, cols = int(dataset.Rows), int(dataset.Columns)
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    sparse = dataset.get("DimensionOrganizationType") == "TILED_SPARSE"
    if not sparse or not per_frame:
        across = -(-int(dataset.TotalPixelMatrixColumns) // cols)
        down = -(-int(dataset.TotalPixelMatrixRows) // rows)
        k = np.arange(frames, dtype=np.int64)
        return (k // across) % down + 1, k % across + 1
    row = np.zeros(frames, dtype=np.int64)
    column = np.zeros(frames, dtype=np.int64)
    shared = _position(dataset.get("SharedFunctionalGroupsSequence"))
    for i, item in enumerate(per_frame[:frames]):
        position = _position([item]) or shared
        if position is not None:
            row[i] = (position[0] - 1) // rows + 1
            column[i] = (position[1] - 1) // cols + 1
    return row, column


def _position(groups: Any) -> tuple[int, int] | None:
    """Row and Column Position In Total Image Pixel Matrix of a functional groups item."""
    if not groups:
        return None
    planes = groups[0].get("PlanePositionSlideSequence")
    if not planes:
        return None
    plane = planes[0]
    row = plane.get("RowPositionInTotalImagePixelMatrix")
    column = plane.get("ColumnPositionInTotalImagePixelMatrix")
    if row is None or column is None:
        return None
    return int(row), int(column)

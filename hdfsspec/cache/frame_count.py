"""The frames an object says it has: the check of the frame numbers a call asks for."""

from __future__ import annotations

import numpy as np

from hdfsspec.cache.layout import Layout
from hdfsspec.dicom.parse import ParsedHeader, number_of_frames
from hdfsspec.errors import FrameIndexError

__all__ = ["FrameCount"]

_PIXEL_TAG = 0x7FE00010


class FrameCount:
    """The number of frames of one object, as its header says (read once a header).

    Parameters
    ----------
    layout : Layout
        The object's layout (its parsed header; parsed again, the count is asked again).
    """

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._count: tuple[ParsedHeader, bool, int] | None = None

    def check(self, wanted: np.ndarray) -> None:
        """Raise IndexError unless every frame of ``wanted`` is one of the object's.

        A data set that says it has frames (Number of Frames) but holds no Pixel Data
        raises :class:`~hdfsspec.errors.FrameIndexError` for them instead.

        The number of frames comes from the header, not from the index: without an
        offset table the index may hold only the frames found so far, and numpy would
        read a negative number as one of those.
        """
        if not wanted.size:
            return
        pixels, total = self.said()
        lo, hi = (
            (int(wanted[0]),) * 2 if wanted.size == 1 else (int(wanted.min()), int(wanted.max()))
        )
        if lo < 0 or hi >= total:
            raise IndexError(f"frame {lo if lo < 0 else hi} out of range (0..{total - 1})")
        if not pixels:
            raise FrameIndexError(
                f"frame {lo}: the data set says Number of Frames is {total} but has no "
                "Pixel Data element (the object may be cut short before its pixels)",
                path=self._layout.path,
                offset=self._layout.size,
                tag=_PIXEL_TAG,
            )

    def said(self) -> tuple[bool, int]:
        """Whether the object has Pixel Data, and its number of frames (once a header)."""
        parsed = self._layout.parsed
        count = self._count
        if count is None or count[0] is not parsed:  # a header parsed again: asked again
            pixels = parsed.header.pixel_data_offset is not None
            said = pixels or "NumberOfFrames" in parsed.dataset  # 1 when absent, with pixels
            count = self._count = (parsed, pixels, number_of_frames(parsed) if said else 0)
        return count[1], count[2]

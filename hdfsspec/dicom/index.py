"""The frame index: where every frame of a DICOM object lives, in absolute bytes.

A :class:`FrameIndex` is an immutable, picklable value. It does no I/O; the parsers
(:mod:`hdfsspec.dicom.parse`, :mod:`hdfsspec.dicom.frame_locations`) build it and the
cache reads from it.

Layout conventions
------------------
* ``header_end`` is the absolute offset of the first byte after the header: for
  encapsulated Pixel Data, the first fragment item (after the Basic Offset Table
  item); for native Pixel Data, the first byte of the value; for objects
  without Pixel Data, the object size.
* For encapsulated Pixel Data, frame ``i`` spans ``[starts[i], stops[i])``: the
  item header of its first fragment up to the end of its last fragment value.
  ``stops[i] == UNKNOWN`` for the last frame when only a Basic Offset Table (or
  an Extended Offset Table without lengths) was available: its end is found by
  walking its items when it is first read.
* For native Pixel Data, frame ``i`` spans the smallest whole-byte range that
  holds its pixels; for 1-bit frames whose size is not a multiple of 8 bits, the
  frame starts ``bit_offset(i)`` bits into its first byte.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

__all__ = ["UNKNOWN", "FrameIndex", "OffsetTableKind"]

UNKNOWN = -1
OffsetTableKind = Literal["bot", "eot", "tiff", "scan", "native", "none"]
_KINDS = ("bot", "eot", "tiff", "scan", "native", "none")


def _frozen(values: Any) -> np.ndarray:
    arr = np.array(values, dtype=np.int64).reshape(-1)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class FrameIndex:
    """Absolute byte ranges of every frame of one DICOM object.

    Parameters
    ----------
    size : int
        Size of the object in bytes.
    transfer_syntax_uid : str
        Transfer Syntax UID of the data set.
    header_end : int
        First byte after the header (see the module notes).
    offset_table : {"bot", "eot", "tiff", "scan", "native", "none"}
        How the frames were located.
    starts, stops : array_like of int
        Absolute start and (exclusive) stop of every frame.
    pixel_keyword : str or None
        ``"PixelData"``, ``"FloatPixelData"``, ``"DoubleFloatPixelData"`` or
        ``None`` for objects without pixels.
    encapsulated : bool
        Whether the Pixel Data is encapsulated (frames are fragment items).
    bits_per_frame : int
        For native Pixel Data, the number of bits of one frame; 0 otherwise.
    pixel_data_offset : int
        Absolute offset of the Pixel Data element tag (``size`` without pixels).
    """

    size: int
    transfer_syntax_uid: str
    header_end: int
    offset_table: OffsetTableKind
    starts: np.ndarray = field(repr=False)
    stops: np.ndarray = field(repr=False)
    pixel_keyword: str | None = None
    encapsulated: bool = False
    bits_per_frame: int = 0
    pixel_data_offset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", _frozen(self.starts))
        object.__setattr__(self, "stops", _frozen(self.stops))
        if self.offset_table not in _KINDS:
            raise ValueError(f"unknown offset table kind {self.offset_table!r}")
        if self.starts.shape != self.stops.shape:
            raise ValueError("starts and stops must have the same length")

    # -- queries -----------------------------------------------------------------
    @property
    def number_of_frames(self) -> int:
        """Number of frames indexed."""
        return int(self.starts.shape[0])

    def frame_range(self, i: int) -> tuple[int, int]:
        """Return the absolute ``(start, stop)`` of frame ``i`` (``stop`` may be UNKNOWN)."""
        return int(self.starts[i]), int(self.stops[i])

    def bit_offset(self, i: int) -> int:
        """Bits to skip in the first byte of native frame ``i`` (1-bit packed data)."""
        if self.encapsulated or self.bits_per_frame % 8 == 0:
            return 0
        return (i * self.bits_per_frame) % 8

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lists", None)  # made again on use
        return state

    @cached_property
    def _lists(self) -> tuple[list[int], list[int]]:
        """``starts`` and ``stops`` as lists (a byte read asks :meth:`frame_at` a few
        times: bisecting a list is a tenth of the cost of numpy's scalar search)."""
        return self.starts.tolist(), self.stops.tolist()

    def frame_at(self, offset: int) -> int:
        """Return the index of the frame whose range holds ``offset``, or -1."""
        starts, stops = self._lists
        n = len(starts)
        if n == 0 or offset < starts[0]:
            return -1
        i = bisect_right(starts, offset) - 1
        stop = stops[i]
        if stop != UNKNOWN and offset >= stop:
            # native 1-bit frames share bytes: the next frame may hold it (not a gap before it)
            held = i + 1 < n and starts[i + 1] <= offset < stops[i + 1]
            return i + 1 if held else -1
        return i

    def covers(self, frames: int | None = None, offset: int | None = None) -> bool:
        """Whether it holds the first ``frames`` frames and a frame ending past ``offset``."""
        n = self.number_of_frames
        if frames is not None and frames > n:
            return False
        return offset is None or (n > 0 and int(self.stops[-1]) > offset)

    def with_last_stop(self, stop: int) -> FrameIndex:
        """Return a copy whose last frame ends at ``stop``."""
        stops = self.stops.copy()
        stops[-1] = stop
        return _replace(self, stops=stops)

    # -- persistence ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (see :meth:`from_dict`)."""
        return {
            "version": 1,
            "size": self.size,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "header_end": self.header_end,
            "offset_table": self.offset_table,
            "starts": self.starts.tolist(),
            "stops": self.stops.tolist(),
            "pixel_keyword": self.pixel_keyword,
            "encapsulated": self.encapsulated,
            "bits_per_frame": self.bits_per_frame,
            "pixel_data_offset": self.pixel_data_offset,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameIndex:
        """Rebuild an index from :meth:`to_dict` output, validating it."""
        if data.get("version") != 1:
            raise ValueError(f"unsupported frame index version {data.get('version')!r}")
        fields = {k: v for k, v in data.items() if k != "version"}
        index = cls(**fields)
        index.validate()
        return index

    def validate(self) -> None:
        """Check bounds and monotonicity; raise ``ValueError`` if inconsistent."""
        starts, stops = self.starts, self.stops
        if not 0 <= self.header_end <= self.size:
            raise ValueError("header_end outside the object")
        if starts.size:
            known = stops != UNKNOWN
            if starts[0] < self.header_end or np.any(np.diff(starts) < 0):
                raise ValueError("frame starts are not monotonic from the header end")
            if np.any(stops[known] < starts[known]) or np.any(stops[known] > self.size):
                raise ValueError("frame stops outside the object")
            if np.any(~known[:-1]):
                raise ValueError("only the last frame may have an unknown end")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameIndex):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.size, self.header_end, self.transfer_syntax_uid, self.number_of_frames))


def _replace(index: FrameIndex, **changes: Any) -> FrameIndex:
    data = index.to_dict()
    data.pop("version")
    data.update(changes)
    return FrameIndex(**data)

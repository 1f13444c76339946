"""highdicom's ``ImageFileReader``, served by a :class:`~hdfsspec.file.DicomFile`.

:class:`DicomFrameReader` takes the data set and the frames from the frame-aware
cache instead of reading the file itself (highdicom's reader walks the Pixel Data
items with small reads), and fetches the frames of a pixel call in cache-sized
batches (:meth:`DicomFrameReader.prefetching`). Used by :mod:`hdfsspec.highdicom.readers`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any, TypeVar

from highdicom.enum import PixelDataKeywords
from highdicom.io import ImageFileReader
from pydicom.dataset import Dataset

from hdfsspec.file import DicomFile

__all__ = ["DicomFrameReader"]

T = TypeVar("T")


class DicomFrameReader(ImageFileReader):
    """A highdicom ``ImageFileReader`` served by a :class:`~hdfsspec.file.DicomFile`.

    It uses the file's frame index instead of walking the Pixel Data, and reads
    each frame from the frame-aware cache. It starts from the data set alone
    (:attr:`DicomFile.metadata`): an Extended Offset Table beyond the first request
    is read while highdicom builds its tables, and :meth:`complete` adds it.
    """

    def __init__(self, file: DicomFile) -> None:
        self._file = file
        self._filename = PurePosixPath(file.path)  # type: ignore[assignment]
        self._fp = None  # type: ignore[assignment]
        self._should_close = False
        self._enter_depth = 0
        parsed = self._start = file.metadata
        dataset = parsed.read_dataset()
        self._file_meta = dataset.file_meta
        del dataset.file_meta
        self._metadata: Dataset = dataset
        self._dataset = dataset
        self._pixel_keyword = PixelDataKeywords(parsed.header.pixel_keyword or "PixelData")
        self._color_manager = None
        self._voi_lut = self._palette_color_lut = self._modality_lut = None

    def complete(self, *datasets: Dataset) -> None:
        """Wait for the whole header; add the elements the data set alone lacked to ``datasets``.

        The Extended Offset Table and its Lengths, when the open deferred them. The
        header's typed errors (a corrupt table, a truncated object) are raised here.
        """
        parsed = self._file.header
        if self._start.complete:
            return  # nothing was deferred
        full = parsed.read_dataset()
        del full.file_meta
        targets = {id(d): d for d in (self._dataset, *datasets)}.values()
        for elem in full:
            for ds in targets:
                if elem.tag not in ds:
                    ds[elem.tag] = elem

    def open(self) -> None:
        """The file is already open: nothing to do."""

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __exit__(self, except_type: Any, except_value: Any, except_trace: Any) -> None:
        self._enter_depth -= 1  # errors propagate unchanged, nothing written to stderr

    @property
    def file(self) -> DicomFile:
        """The underlying :class:`~hdfsspec.file.DicomFile`."""
        return self._file

    @property
    def number_of_frames(self) -> int:
        # from the data set: the frame index may still be partial (scan under way)
        return int(self._dataset.get("NumberOfFrames", 1) or 1)

    def read_frame_raw(self, index: int) -> bytes:
        """Return the encoded bytes of frame ``index`` (0-based) from the cache."""
        if not 0 <= index < self.number_of_frames:
            raise ValueError(f"frame index {index} out of range (0..{self.number_of_frames - 1})")
        return self._file.read_frames([index])[0]

    def prefetching(self, items: Iterable[T], frame_of: Callable[[T], int]) -> Iterator[T]:
        """Yield ``items`` after fetching the frames they need, in cache-sized batches.

        Each batch is fetched (one round) just before the first item that needs it,
        so a call larger than the cache decodes a batch before the next one evicts it.
        """
        items = list(items)
        cache = self._file._frames  # a closed file raises as it does for any read
        distinct = list(dict.fromkeys(frame_of(item) for item in items))  # first-use order
        n = self.number_of_frames
        if any(not _integral(f) or not 0 <= f < n for f in distinct):
            yield from items  # highdicom raises its own IndexError (a float: a TypeError)
            return
        batches = list(
            self._file.frame_batches(distinct, max(1, cache.options.max_cache_bytes // 2))
        )
        batch_of = {frame: k for k, batch in enumerate(batches) for frame in batch}
        fetched = -1
        for item in items:
            needed = batch_of[frame_of(item)]
            while fetched < needed:  # each batch just before the first item that needs it
                fetched += 1
                cache.prefetch(batches[fetched])
            yield item


def _integral(value: Any) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return True

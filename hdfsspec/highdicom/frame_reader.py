"""highdicom's ``ImageFileReader``, served by a :class:`~hdfsspec.file.DicomFile`.

:class:`DicomFrameReader` takes the data set and the frames from the frame-aware
cache instead of reading the file itself (highdicom's reader walks the Pixel Data
items with small reads), and fetches the frames of a pixel call in cache-sized
batches (:meth:`DicomFrameReader.prefetching`). Otherwise it is highdicom's reader:
its ``read_frame`` (colour corrected by the ICC profile by default), ``metadata``,
``filename`` and error messages. Used by :mod:`hdfsspec.highdicom.readers`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from fsspec.implementations.local import LocalFileSystem
from pydicom.dataset import Dataset

from hdfsspec.file import DicomFile
from hdfsspec.highdicom._adapter import GivenImageFileReader
from hdfsspec.io.redact import redact_url

__all__ = ["DicomFrameReader"]

T = TypeVar("T")


class DicomFrameReader(GivenImageFileReader):
    """A highdicom ``ImageFileReader`` served by a :class:`~hdfsspec.file.DicomFile`.

    It uses the file's frame index instead of walking the Pixel Data, and reads
    each frame from the frame-aware cache. It starts from the data set alone
    (:attr:`DicomFile.metadata`): an Extended Offset Table beyond the first request
    is read while highdicom builds its tables, and :meth:`complete` adds it.

    Parameters
    ----------
    file : DicomFile
        The open file; :meth:`close` closes it.
    """

    def __init__(self, file: DicomFile) -> None:
        parsed = file.metadata
        dataset = parsed.read_dataset()
        file_meta = dataset.file_meta
        del dataset.file_meta
        target = file.fs.fs
        local = isinstance(target, LocalFileSystem)
        super().__init__(
            Path(file.path) if local else None,
            dataset,
            file_meta,
            parsed.header.pixel_keyword or "PixelData",
        )
        self._file = file
        self._start = parsed
        self._dataset = dataset
        # a remote object's name: its URL, any signature redacted (as in errors)
        self._url = None if local else redact_url(target.unstrip_protocol(file.path))

    @property
    def filename(self) -> str:
        """The name of the object: as highdicom's reader names a file, its local path;
        a remote object's URL (its signing parameters redacted), which has none."""
        return super().filename if self._url is None else self._url

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

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    @property
    def file(self) -> DicomFile:
        """The underlying :class:`~hdfsspec.file.DicomFile`."""
        return self._file

    @property
    def number_of_frames(self) -> int:
        # from the data set: the frame index may still be partial (scan under way); read
        # once (a pydicom lookup costs more than the rest of a cached frame's read)
        count = self.__dict__.get("_number_of_frames")
        if count is None:
            count = self.__dict__["_number_of_frames"] = int(
                self._dataset.get("NumberOfFrames", 1) or 1
            )
        return int(count)

    def read_frame_raw(self, index: int) -> bytes:
        """Return the encoded bytes of frame ``index`` (0-based) from the cache.

        An index out of range raises highdicom's ``ValueError``, one that is not an
        integer its ``TypeError`` (with their messages), before any request.
        """
        if index < 0 or index >= self.number_of_frames:
            raise ValueError(
                "Frame index must be greater than or equal to 0 and less "
                "than the number of frames in the image."
            )
        if not _integral(index):
            raise _not_an_index(index)
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


def _not_an_index(value: Any) -> TypeError:
    """The ``TypeError`` of highdicom's reader for ``value``: it indexes a list with it."""
    try:
        [][value]
    except TypeError as error:
        return TypeError(*error.args)
    return TypeError(f"list indices must be integers or slices, not {type(value).__name__}")


def _integral(value: Any) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return True

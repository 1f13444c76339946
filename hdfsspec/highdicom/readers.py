"""highdicom objects read through the ``dicom`` filesystem, with lazy, batched frames.

``imread`` and ``segread`` return highdicom objects whose frames are fetched
on demand from the frame-aware cache. Pixel calls (``get_total_pixel_matrix``,
``get_frames``, ``get_volume``, ``get_pixels_by_source_frame`` ...) first work
out every frame they need, fetch them as one coalesced concurrent batch (in
chunks that fit the cache bound), then decode. The object owns its file: it
stays usable after the call returns and ``close()`` (or ``with``) releases it.

With :mod:`hdfsspec.highdicom.frame_reader` (the reader these objects are served by), the
only module that imports highdicom; highdicom's private names are reached through
:mod:`hdfsspec.highdicom._adapter` only.
"""

from __future__ import annotations

import gc
import io
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import highdicom as hd

from hdfsspec.dicom.parse import ParsedHeader, check_image
from hdfsspec.errors import DicomFormatError, UnsupportedTransferSyntaxError
from hdfsspec.file import DicomFile
from hdfsspec.highdicom._adapter import (
    ImageSeams,
    SegmentationSeams,
    attach_reader,
    file_reader,
    frame_index,
    pickled_tables,
    quick_sop_class_checks,
)
from hdfsspec.highdicom._tiled_full import quick_tiled_full
from hdfsspec.highdicom.frame_reader import DicomFrameReader
from hdfsspec.io.planning import FetchPlan, distinct_frames
from hdfsspec.sources import Source, open_dicom, whole

__all__ = ["DicomFrameReader", "annread", "imread", "open_dicom", "segread", "srread"]

T = TypeVar("T")

quick_sop_class_checks()  # highdicom's answers without its 22 MB table (0.37 s a process)
quick_tiled_full()  # a TILED_FULL image's tile positions a plane at a time, not a tile


class _Planned(Exception):
    """Raised inside a dry run once the frames of a pixel call are known."""

    def __init__(self, frames: list[int]) -> None:
        super().__init__(f"{len(frames)} frames")
        self.frames = frames


class _Prefetching(Iterator[T]):
    """Items whose frames are fetched in batches as they are reached (wrapped once)."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items

    def __next__(self) -> T:
        return next(self._items)


_PLANNING: ContextVar[object | None] = ContextVar("hdfsspec_planning", default=None)
"""The object whose pixel call is being planned in this thread (``plan()``), if any."""


SERIALIZED = sqlite3.threadsafety == 3
"""Whether SQLite lets one connection serve several threads at once (Python 3.11+ says;
3.10 always reports 1)."""


class _ThreadTables:
    """highdicom's frame tables, one SQLite connection a thread.

    highdicom keeps its tables in a connection that only the thread which made it
    may use, and builds each pixel call's query tables in it under fixed names (two
    calls at once in one connection would drop each other's). So each thread that
    reads the object gets its own copy of the tables (a backup of under a
    millisecond: about 1.5 MB for 24,649 frames), made from a source connection
    taken once they are built; the tables do not change after that, but for each
    call's own query tables (highdicom drops those it finds left over). Where SQLite
    is serialized the building thread reads the source itself (one copy in all, as
    in highdicom, for an object read by one thread); elsewhere the source is a copy
    of its own, read only by one backup at a time.
    """

    def __init__(self, built: sqlite3.Connection) -> None:
        self._source = sqlite3.connect(":memory:", check_same_thread=False)
        built.backup(self._source)
        if SERIALIZED:
            built.close()
            built = self._source
        self._lock = threading.Lock()  # one backup from the source at a time
        self._local = threading.local()
        self._local.connection = built  # the building thread goes on with it

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (copied from the source on its first use)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(":memory:")
            with self._lock:
                self._source.backup(connection)
            self._local.connection = connection
        return connection


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while (on again after, if it was on).

    highdicom's frame tables of a 24,649-tile slide make about 200,000 lists, tuples and
    numbers, none in a cycle; the collections they set off scanned them for nothing (35
    of 180 ms). What becomes garbage meanwhile is collected by the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _BatchedFrames(ImageSeams):
    """Mixin: every pixel call fetches its frames in one batch before decoding.

    The object is usable from any thread (dask's threaded scheduler, a thread pool of
    regions, a dask worker that unpickles in one thread and runs tasks in another),
    which highdicom's own objects refuse: see :class:`_ThreadTables`. The hooks of
    :class:`~hdfsspec.highdicom._adapter.ImageSeams` are highdicom's way in.
    """

    def _tables_connection(self) -> sqlite3.Connection:
        tables = self.__dict__.get("_hdfsspec_tables")
        if tables is None:  # highdicom is building the tables
            connection: sqlite3.Connection = self.__dict__["_hdfsspec_building"]
            return connection
        return tables.connection()

    def _tables_building(self, connection: sqlite3.Connection) -> None:
        self.__dict__["_hdfsspec_building"] = connection  # highdicom builds its tables
        self.__dict__.pop("_hdfsspec_tables", None)

    def _tables_built(self) -> None:
        """From now on each thread reads its own copy of the tables."""
        built = self.__dict__.pop("_hdfsspec_building")
        self.__dict__["_hdfsspec_tables"] = _ThreadTables(built)

    @classmethod
    def from_dataset(cls: type[T], dataset: Any, *args: Any, **kwargs: Any) -> T:
        with _collector_paused():  # highdicom's tables: tens of thousands of objects, no cycle
            obj = super().from_dataset(dataset, *args, **kwargs)  # type: ignore[misc]
        obj._tables_built()
        return obj

    def __getstate__(self) -> dict[str, Any]:
        # highdicom's own, for a connection kept in the instance: the tables as SQL
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_hdfsspec_")}
        state.update(pickled_tables(self))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]  # builds them again, here
        self._tables_built()

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        """dask's token: the class and its file's (the object's version), no pixel data
        or tables hashed (``dask.delayed`` tokenizes every argument of every call); an
        object read whole (its frames in memory) gets a token of its own."""
        file = self.file
        if file is not None:
            return (type(self).__qualname__, file.__dask_tokenize__())
        token = self.__dict__.setdefault("_hdfsspec_token", uuid.uuid4().hex)
        return (type(self).__qualname__, token)

    def _batched(self, items: Iterable[T], frame_of: Callable[[T], int]) -> Iterable[T]:
        if isinstance(items, _Prefetching):  # an outer call has planned them already
            return items
        if _PLANNING.get() is self:
            raise _Planned([frame_of(item) for item in items])
        reader = file_reader(self)
        if isinstance(reader, DicomFrameReader):
            return _Prefetching(reader.prefetching(items, frame_of))
        return items

    def plan(self, method: str | Callable[..., Any], *args: Any, **kwargs: Any) -> FetchPlan:
        """Dry run of a pixel call: the frames it needs and the requests they would cost.

        Nothing is decoded, no frame is fetched and the items of the Pixel Data are
        never walked; frames already cached cost nothing. On an object without offset
        table, the frames a walk of the items has not reached yet are the plan's
        ``unknown``, not counted in ``requests`` and ``nbytes`` (see
        :meth:`hdfsspec.DicomFile.plan`, which also says when an offset table is read).

        Parameters
        ----------
        method : str or bound method
            The pixel call, e.g. ``"get_total_pixel_matrix"`` or ``im.get_frames``.
        *args, **kwargs
            Its arguments.

        Returns
        -------
        FetchPlan
            ``frames``: every frame the call needs (0-based, sorted, cached ones
            included); ``ranges``, ``requests`` and ``nbytes``: what fetching those
            not cached costs; ``unknown``: those whose place is not known before a
            walk of the items (objects without offset table).

        Examples
        --------
        >>> im.plan("get_total_pixel_matrix", row_start=1, row_end=513,
        ...         column_start=1, column_end=513).requests  # doctest: +SKIP
        2
        """
        call = getattr(self, method) if isinstance(method, str) else method
        file = self.file
        token = _PLANNING.set(self)  # this thread's calls only: others read as usual
        try:
            call(*args, **kwargs)
            frames: list[int] = []  # the call needed no frame
        except _Planned as planned:
            frames = planned.frames
        finally:
            _PLANNING.reset(token)
        if file is None:  # frames held in memory (read whole): they cost nothing
            return FetchPlan(tuple(distinct_frames(frames).tolist()), ())
        return file.plan(frames)

    def get_raw_frame(self, frame_number: int, as_index: bool = False) -> bytes:
        if _PLANNING.get() is self:  # get_frame, get_stored_frame come here too
            raise _Planned([frame_index(self, frame_number, as_index)])
        return super().get_raw_frame(frame_number, as_index)  # type: ignore[misc]

    def _frame_numbers(self, frame_numbers: Iterable[int] | None, as_indices: bool) -> list[int]:
        if frame_numbers is None:
            n = self.number_of_frames  # type: ignore[attr-defined]
            return list(range(n)) if as_indices else list(range(1, n + 1))
        return list(frame_numbers)

    def get_stored_frames(
        self, frame_numbers: Iterable[int] | None = None, as_indices: bool = False
    ) -> Any:
        numbers = self._frame_numbers(frame_numbers, as_indices)
        offset = 0 if as_indices else 1
        batched = self._batched(numbers, lambda n: n - offset)
        return super().get_stored_frames(iter(batched), as_indices)  # type: ignore[misc]

    def get_frames(
        self, frame_numbers: Iterable[int] | None = None, as_indices: bool = False, **kwargs: Any
    ) -> Any:
        numbers = self._frame_numbers(frame_numbers, as_indices)
        offset = 0 if as_indices else 1
        batched = self._batched(numbers, lambda n: n - offset)
        return super().get_frames(iter(batched), as_indices, **kwargs)  # type: ignore[misc]

    # -- lifetime ---------------------------------------------------------------------
    @property
    def file(self) -> DicomFile | None:
        """The :class:`~hdfsspec.file.DicomFile` the frames come from."""
        reader = file_reader(self)
        return reader.file if isinstance(reader, DicomFrameReader) else None

    def close(self) -> None:
        """Release the file; frames not yet read can no longer be fetched."""
        if self.file is not None:
            self.file.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class DicomImage(_BatchedFrames, hd.Image):
    """A :class:`highdicom.Image` whose frames come from the ``dicom`` filesystem."""


class DicomSegmentation(_BatchedFrames, SegmentationSeams, hd.seg.Segmentation):
    """A :class:`highdicom.seg.Segmentation` whose frames come from the ``dicom`` filesystem."""


def _has_pixels(parsed: ParsedHeader) -> None:
    """Refuse an object without pixels, as highdicom's lazy reader does (a ValueError)."""
    if parsed.header.pixel_data_offset is None:
        raise DicomFormatError(
            "no Pixel Data, Float Pixel Data or Double Float Pixel Data element: the data "
            "set does not represent an image (structured reports and annotations: srread, "
            "annread)",
            path=parsed.path,
            offset=parsed.header_end,
            tag=0x7FE00010,
        )


def _read_whole(file: DicomFile) -> bytes:
    """All bytes of an open file (the first request's bytes are not fetched again)."""
    with file:
        file.seek(0)
        return file.read()


def _lazy(
    cls: Any,
    eager: Callable[[io.BytesIO], Any],
    url: Source | DicomFile,
    storage_options: dict[str, Any] | None,
    **kwargs: Any,
) -> Any:
    """``cls`` over an open file, with lazy frames; ``eager`` reads a deflated data set.

    A data set deflated as a whole (Deflated Explicit VR Little Endian) has no frame
    byte ranges: it is read whole (the bytes the open fetched, and one request for
    the rest) and ``eager`` builds the object from it, its frames in memory, as
    ``lazy_frame_retrieval=False`` does.
    """
    file = url if isinstance(url, DicomFile) else open_dicom(url, storage_options, **kwargs)
    try:
        meta = file.metadata
    except UnsupportedTransferSyntaxError:  # a data set deflated as a whole
        return eager(io.BytesIO(_read_whole(file)))
    except BaseException:
        file.close()
        raise
    try:
        reader = DicomFrameReader(file)
        deferred = not meta.complete  # an Extended Offset Table is on its way
        if not deferred:
            _has_pixels(meta)
        check_image(meta)  # what highdicom's tables are built from
        obj = cls.from_dataset(reader.file_dataset(), copy=False)
        reader.complete(obj)  # a deferred Extended Offset Table came in meanwhile
        if deferred:
            _has_pixels(file.header)
    except BaseException:
        file.close()
        raise
    attach_reader(obj, reader)
    weakref.finalize(reader, file.close)  # shared by copy.copy(obj): closed after the last
    return obj


def _eager_image(data: io.BytesIO) -> DicomImage:
    return DicomImage.from_file(data, lazy_frame_retrieval=False)


def _eager_segmentation(data: io.BytesIO) -> DicomSegmentation:
    return DicomSegmentation.from_file(data, lazy_frame_retrieval=False)


def imread(
    url: Source | DicomFile,
    storage_options: dict[str, Any] | None = None,
    lazy_frame_retrieval: bool = True,
    **kwargs: Any,
) -> DicomImage:
    """Read an image as a :class:`highdicom.Image` with lazy, batched frame retrieval.

    Parameters
    ----------
    url : str, bytes, os.PathLike, fsspec.core.OpenFile, file or DicomFile
        URL of the object, with or without the ``dicom::`` prefix
        (``s3://bucket/slide.dcm``, ``gs://...``, ``https://...``, a local path),
        an ``OpenFile`` or a file opened by fsspec (see :func:`open_dicom`), or a
        file already opened by the ``dicom`` filesystem (the object then owns it).
    storage_options : dict, optional
        Options keyed by protocol, as :func:`fsspec.open` takes them.
    lazy_frame_retrieval : bool, optional
        As in :func:`highdicom.imread`. True (the default): frames are fetched
        when a pixel call needs them. False: the whole object is read in one
        request and the object holds its frames in memory, as highdicom's does
        (``close()`` and ``with`` work alike; ``plan()`` then costs nothing).
    **kwargs
        Passed to ``fs.open`` (e.g. ``cache_options``).

    Returns
    -------
    DicomImage
        A :class:`highdicom.Image`; ``close()`` or ``with`` releases its file.
    """
    if not lazy_frame_retrieval:
        return _eager_image(io.BytesIO(whole(url, storage_options)))
    return _lazy(DicomImage, _eager_image, url, storage_options, **kwargs)


def segread(
    url: Source | DicomFile,
    storage_options: dict[str, Any] | None = None,
    lazy_frame_retrieval: bool = True,
    **kwargs: Any,
) -> DicomSegmentation:
    """Read a Segmentation as a :class:`highdicom.seg.Segmentation` with lazy frames.

    See :func:`imread` for the parameters.
    """
    if not lazy_frame_retrieval:
        return _eager_segmentation(io.BytesIO(whole(url, storage_options)))
    return _lazy(DicomSegmentation, _eager_segmentation, url, storage_options, **kwargs)


def srread(url: Source, storage_options: dict[str, Any] | None = None) -> Any:
    """Read a Structured Report in one request; returns a highdicom SR object."""
    return hd.sr.srread(whole(url, storage_options))


def annread(url: Source, storage_options: dict[str, Any] | None = None) -> Any:
    """Read Microscopy Bulk Simple Annotations in one request."""
    return hd.ann.annread(whole(url, storage_options))

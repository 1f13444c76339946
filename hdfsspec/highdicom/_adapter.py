"""highdicom's private names, all in one place.

The only module of hdfsspec that touches what highdicom keeps to itself (names with a
leading underscore on its classes and modules): the state of
``highdicom.io.ImageFileReader`` that :class:`~hdfsspec.highdicom.frame_reader.DicomFrameReader`
is given instead of reading a file, and the seams of ``highdicom.Image`` and
``highdicom.seg.Segmentation`` through which pixel calls pull their frames and keep
their frame tables. Checked against highdicom 0.28.1 and 0.28.2, the versions
``pyproject.toml`` allows (``tox -e highdicom-oldest,highdicom-newest``; 0.28.0's reader
keeps ``_as_float``, not ``_pixel_keyword``). ``tests/test_layers.py`` fails when another
module of hdfsspec uses such a name, or when one named here is gone from highdicom.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import highdicom.image as hd_image
from highdicom.color import ColorManager
from highdicom.enum import PixelDataKeywords
from highdicom.io import ImageFileReader
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue

from hdfsspec.highdicom import _sop_classes as sop_classes
from hdfsspec.highdicom._rows import insert_rows, plain, plain_columns

__all__ = [
    "NOT_GIVEN",
    "GivenImageFileReader",
    "ImageSeams",
    "SegmentationSeams",
    "attach_reader",
    "color_manager",
    "file_reader",
    "frame_index",
    "pickled_tables",
    "quick_sop_class_checks",
]

T = TypeVar("T")

# highdicom's reader logs these notices under its own logger: silencing it silences ours
_log = logging.getLogger("highdicom.io")

NOT_GIVEN = frozenset({"_pixel_data_offset", "_first_frame_offset", "_offset_table"})
"""State of highdicom's reader that a :class:`GivenImageFileReader` has not: where the
frames lie in the file, read only by highdicom's ``read_frame_raw`` (a subclass serves it)."""


def quick_sop_class_checks() -> None:
    """Answer highdicom's two SOP-class checks of ``highdicom.image`` from precomputed sets.

    ``Image.from_dataset`` asks ``does_iod_have_pixel_data`` and ``is_multiframe_image``,
    which load a 22 MB JSON table on their first call (0.37 s of a new process's first
    ``imread``). The functions ``highdicom.image`` calls are replaced, once, by ones that
    answer from :mod:`hdfsspec.highdicom._sop_classes` (highdicom's own answers,
    generated from its tables) and call highdicom's for any other SOP class: the answers
    are the same, for every caller of ``highdicom.image`` in the process.
    """
    if getattr(hd_image.does_iod_have_pixel_data, "_hdfsspec", False):
        return  # replaced already
    has_pixels, multiframe = hd_image.does_iod_have_pixel_data, hd_image.is_multiframe_image

    def does_iod_have_pixel_data(sop_class_uid: str) -> bool:
        if sop_class_uid in sop_classes.KNOWN:
            return sop_class_uid in sop_classes.PIXEL
        return bool(has_pixels(sop_class_uid))

    def is_multiframe_image(dataset: Dataset) -> bool:
        uid = getattr(dataset, "SOPClassUID", None)
        if uid in sop_classes.KNOWN:
            return uid in sop_classes.MULTIFRAME
        return bool(multiframe(dataset))

    for quick, slow in ((does_iod_have_pixel_data, has_pixels), (is_multiframe_image, multiframe)):
        quick.__doc__ = slow.__doc__
        setattr(quick, "_hdfsspec", True)  # noqa: B010  (marks it replaced)
    hd_image.does_iod_have_pixel_data = does_iod_have_pixel_data
    hd_image.is_multiframe_image = is_multiframe_image


def color_manager(metadata: Dataset) -> ColorManager | None:
    """The ICC colour transform of an image, found and built as highdicom's reader does.

    As ``ImageFileReader._read_metadata`` (highdicom 0.28): for a colour image, the ICC
    Profile of the data set, else that of the first Optical Path Sequence item (with a
    warning when there are several). None, with a warning logged, when there is none or
    it cannot be read; highdicom's ``read_frame`` then refuses ``correct_color=True``.

    Parameters
    ----------
    metadata : pydicom.Dataset
        The image's data set.

    Returns
    -------
    highdicom.color.ColorManager or None
        The transform; None for a monochrome image or without a readable profile.
    """
    if metadata.SamplesPerPixel <= 1:
        return None
    icc_profile: bytes | None = None
    try:
        icc_profile = metadata.ICCProfile
    except AttributeError:
        try:
            if len(metadata.OpticalPathSequence) > 1:
                _log.warning("color image contains more than one optical path")
            icc_profile = metadata.OpticalPathSequence[0].ICCProfile
        except (IndexError, AttributeError):
            _log.warning("no ICC Profile found in image metadata.")
    if icc_profile is None:
        return None
    try:
        return ColorManager(icc_profile)
    except ValueError:
        _log.warning("could not read ICC Profile")
        return None


class GivenImageFileReader(ImageFileReader):
    """highdicom's ``ImageFileReader`` whose data set is given, not read from a file.

    It is left as highdicom's ``_read_metadata`` leaves a reader (the data set without
    its File Meta Information, the Pixel Data keyword, the ICC colour transform), so
    highdicom's own ``read_frame``, ``metadata``, ``transfer_syntax_uid`` and ``with``
    work on it. A subclass serves ``read_frame_raw``: highdicom's reads the file at
    offsets it found itself (:data:`NOT_GIVEN`).

    Parameters
    ----------
    filename : pathlib.Path or None
        The local file, as highdicom's reader names it, or None (a file object
        without name, to highdicom: a remote object).
    dataset : pydicom.Dataset
        The data set, without File Meta Information (kept, not copied).
    file_meta : pydicom.dataset.FileMetaDataset
        Its File Meta Information.
    pixel_keyword : str
        ``"PixelData"``, ``"FloatPixelData"`` or ``"DoubleFloatPixelData"``.
    """

    def __init__(
        self,
        filename: Path | None,
        dataset: Dataset,
        file_meta: FileMetaDataset,
        pixel_keyword: str,
    ) -> None:
        super().__init__(Path())  # highdicom's own defaults: the LUTs, the depth of ``with``
        self._filename = filename  # type: ignore[assignment]
        self._should_close = False  # the owner of the file closes it
        self._file_meta = file_meta
        self._metadata = dataset
        self._pixel_keyword = PixelDataKeywords(pixel_keyword)

    @cached_property
    def _color_manager(self) -> ColorManager | None:  # type: ignore[override]
        # built on first use, not at the open: highdicom's reader builds it as it reads
        # the metadata (the same notices, logged by the first read_frame here)
        return color_manager(self.metadata)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the colour transform (Pillow's cannot be): built again on use."""
        state = self.__dict__.copy()
        state.pop("_color_manager", None)
        return state

    def _read_metadata(self) -> None:
        """The metadata was given: nothing to read (highdicom code that asks gets it)."""

    def open(self) -> None:
        """The file is already open: nothing to do."""

    def __exit__(self, except_type: Any, except_value: Any, except_trace: Any) -> None:
        """Leave ``with``: errors propagate unchanged (highdicom's writes them to stderr)
        and the file stays open (its owner closes it)."""
        self._enter_depth -= 1

    def file_dataset(self) -> FileDataset:
        """The data set with its File Meta Information and :attr:`filename`, as highdicom's
        lazy ``imread`` hands it to ``from_dataset``: its elements are those of
        :attr:`metadata` (which this reader keeps; highdicom's keeps a weak reference).

        Returns
        -------
        pydicom.dataset.FileDataset
            The data set.
        """
        syntax = self.transfer_syntax_uid
        return FileDataset(
            self.filename,
            dataset=self.metadata,
            file_meta=self._file_meta,
            is_implicit_VR=syntax.is_implicit_VR,
            is_little_endian=syntax.is_little_endian,
        )


def _frame_of_item(item: Any) -> int:
    """The frame index of one of the items highdicom's frame loops iterate."""
    index: int = item[0]
    return index


class ImageSeams:
    """The private seams of ``highdicom.Image`` that hdfsspec's images work through.

    Each is handed to a hook of hdfsspec's own (a name highdicom does not use):

    ``_db_con``
        The SQLite connection of the frame tables: highdicom sets it as it builds them
        (and as it unpickles), :meth:`_tables_building` takes it; a read of it is
        :meth:`_tables_connection`'s answer.
    ``_get_pixels_by_frame``
        The loop of a pixel call over its frames: the (frame index, ...) items go
        through :meth:`_batched` first.
    """

    def _tables_building(self, connection: sqlite3.Connection) -> None:
        """Hook: highdicom (re)builds its frame tables in ``connection``."""
        raise NotImplementedError

    def _tables_connection(self) -> sqlite3.Connection:
        """Hook: the connection highdicom's queries go to."""
        raise NotImplementedError

    def _batched(self, items: Iterable[T], frame_of: Callable[[T], int]) -> Iterable[T]:
        """Hook: the items of a frame loop (``frame_of`` gives an item's frame index)."""
        return items

    @property
    def _db_con(self) -> sqlite3.Connection:
        return self._tables_connection()

    @_db_con.setter
    def _db_con(self, connection: sqlite3.Connection) -> None:
        self._tables_building(connection)

    @staticmethod
    def _standardize_lut_value(elem: Any) -> Any:
        # highdicom's value for its frame table, as the values SQLite binds it as: a
        # multi-valued one (Pixel Spacing, repeated for each frame) as a tuple, whose
        # items highdicom's column loops index at C speed (30 ms of a 24,649-frame table)
        value = hd_image.Image._standardize_lut_value(elem)
        if isinstance(value, MultiValue):
            return tuple(map(plain, value))
        return plain(value)

    def _create_frame_lut(self, column_defs: list[str], column_data: list[list[Any]]) -> None:
        # highdicom makes its table (empty), then the same rows go in faster: see insert_rows
        super()._create_frame_lut(column_defs, [[] for _ in column_data])  # type: ignore[misc]
        insert_rows(self._db_con, "FrameLUT", plain_columns(column_data))

    def _get_pixels_by_frame(
        self, spatial_shape: Any, indices_iterator: Any, *args: Any, **kwargs: Any
    ) -> Any:
        batched = iter(self._batched(indices_iterator, _frame_of_item))
        return super()._get_pixels_by_frame(spatial_shape, batched, *args, **kwargs)  # type: ignore[misc]


class SegmentationSeams(ImageSeams):
    """:class:`ImageSeams`, and ``Segmentation``'s loop over its frames for combined
    segments (``_get_pixels_by_seg_frame``, which reads frame by frame, not through
    ``_get_pixels_by_frame``): its items go through :meth:`_batched` too."""

    def _get_pixels_by_seg_frame(
        self, spatial_shape: Any, indices_iterator: Any, *args: Any, **kwargs: Any
    ) -> Any:
        batched = iter(self._batched(indices_iterator, _frame_of_item))
        return super()._get_pixels_by_seg_frame(spatial_shape, batched, *args, **kwargs)  # type: ignore[misc]


def frame_index(image: Any, frame_number: int, as_index: bool) -> int:
    """The 0-based index of a frame, checked as highdicom's single-frame calls do.

    Parameters
    ----------
    image : highdicom.Image
        The image.
    frame_number : int
        1-based frame number, or 0-based index with ``as_index``.
    as_index : bool
        Whether ``frame_number`` is a 0-based index.

    Returns
    -------
    int
        The index; highdicom's ``IndexError`` (or ``TypeError``) for a bad number.
    """
    index: int = image._standardize_frame_index(frame_number, as_index)
    return index


def pickled_tables(image: Any) -> dict[str, bytes]:
    """The frame tables as highdicom's ``__getstate__`` pickles them (their SQL, under the
    key its ``__setstate__`` reads them from)."""
    return {"db_data": image._serialize_db()}


def file_reader(image: Any) -> ImageFileReader | None:
    """The reader a lazy image's frames come from (None: frames held in memory)."""
    return getattr(image, "_file_reader", None)


def attach_reader(image: Any, reader: ImageFileReader) -> None:
    """Serve the frames of ``image`` from ``reader``, as highdicom's lazy ``imread`` does."""
    image._file_reader = reader

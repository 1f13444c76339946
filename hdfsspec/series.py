"""A CT or MR series (one single-frame instance per slice) read as a :class:`highdicom.Volume`."""

from __future__ import annotations

import io
from typing import Any

import fsspec
import pydicom

from hdfsspec.errors import SeriesError
from hdfsspec.file import DicomFile
from hdfsspec.highdicom.series import volume_from_series
from hdfsspec.instances import (
    NonDicom,
    Series,
    file_name,
    open_instances,
    read_whole,
    select_series,
)

__all__ = ["read_series_volume"]


def _single_frames(files: list[DicomFile], name: str) -> None:
    """Refuse a multi-frame image: its frames are a volume of their own."""
    for f in files:
        frames = int(f.metadata.dataset.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise SeriesError(
                f"{file_name(f)} is a multi-frame image ({frames} frames): read its volume "
                "with hdfsspec.imread(url).get_volume()",
                path=name,
            )


def read_series_volume(
    source: Series,
    storage_options: dict[str, Any] | None = None,
    *,
    series_uid: str | None = None,
    filesystem: fsspec.AbstractFileSystem | None = None,
    non_dicom: NonDicom | None = None,
    **volume_options: Any,
) -> Any:
    """Read a series of single-frame images (CT, MR, PET...) as a :class:`highdicom.Volume`.

    The prefix is listed (or the glob expanded) once; the first bytes of every
    object are fetched in one concurrent round, and the rest of the slices (their
    pixels) in a second one, none for slices that the first bytes held whole. The
    volume is highdicom's :func:`highdicom.get_volume_from_series`.

    Parameters
    ----------
    source : str, os.PathLike or list of them
        A prefix (``"s3://bucket/study/series/"``, with or without ``dicom::``), a
        glob or a list of URLs.
    storage_options : dict, optional
        Options keyed by protocol, as :func:`fsspec.open` takes them.
    series_uid : str, optional
        The series to read when the objects hold several (else
        :class:`~hdfsspec.errors.MixedSeriesError`, naming them).
    filesystem : fsspec.AbstractFileSystem, optional
        The filesystem ``source`` is a path of, instead of URLs and ``storage_options``.
    non_dicom : {"warn", "raise"}, optional
        What an object that is not DICOM gets: by default skipped with a
        :class:`~hdfsspec.instances.SkippedObjectWarning` under a prefix or glob, a
        :class:`~hdfsspec.errors.NotDicomError` in a list.
    **volume_options
        Passed to :func:`highdicom.get_volume_from_series` (``dtype``, float64 by
        default; ``apply_modality_transform``...).

    Returns
    -------
    highdicom.Volume
        The slices, sorted and stacked, with their geometry.

    Raises
    ------
    hdfsspec.errors.SeriesError
        A multi-frame image among the objects, or slices that do not make a volume.

    Examples
    --------
    >>> volume = hdfsspec.read_series_volume(  # doctest: +SKIP
    ...     "s3://bucket/study/ct-series/", storage_options={"s3": {"anon": True}})
    >>> volume.array.shape, volume.spacing  # doctest: +SKIP
    """
    name, files = open_instances(
        source, storage_options, filesystem=filesystem, non_dicom=non_dicom
    )
    files = select_series(files, series_uid, name)
    try:
        _single_frames(files, name)
        blobs = read_whole(files)
    finally:
        for f in files:
            f.close()
    datasets = [pydicom.dcmread(io.BytesIO(blob)) for blob in blobs]
    return volume_from_series(datasets, name=name, **volume_options)

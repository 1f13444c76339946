"""hdfsspec: frame-aware fsspec access to DICOM objects, with lazy highdicom objects."""

from __future__ import annotations

from fsspec.registry import register_implementation

from hdfsspec._types import DEFAULT_OPTIONS, ReadOptions
from hdfsspec.cache.dicom_cache import DicomFrameCache
from hdfsspec.cache.persist import IndexStoreWarning
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.errors import (
    DicomFormatError,
    FrameIndexError,
    MixedSeriesError,
    NotDicomError,
    ObjectChangedError,
    OffsetTableError,
    ReadOnlyError,
    SeriesError,
    TransportError,
    TruncatedDicomError,
    UnsupportedTransferSyntaxError,
)
from hdfsspec.file import DicomFile
from hdfsspec.filesystem import DicomFileSystem
from hdfsspec.io.planning import FetchPlan

__version__ = "0.1.0"

register_implementation("dicom", DicomFileSystem, clobber=True)


def __getattr__(name: str):
    # highdicom is imported only when its readers are used
    if name == "open_dicom":
        from hdfsspec.sources import open_dicom

        return open_dicom
    if name in {"imread", "segread", "srread", "annread"}:
        from hdfsspec.highdicom import readers

        return getattr(readers, name)
    if name in {"open_slide", "Slide"}:
        from hdfsspec import slide

        return getattr(slide, name)
    if name == "read_series_volume":
        from hdfsspec.series import read_series_volume

        return read_series_volume
    if name == "SkippedObjectWarning":
        from hdfsspec.instances import SkippedObjectWarning

        return SkippedObjectWarning
    if name == "to_dask":  # dask too: the optional extra "dask"
        from hdfsspec.dask import to_dask

        return to_dask
    raise AttributeError(f"module 'hdfsspec' has no attribute {name!r}")


__all__ = [
    "DEFAULT_OPTIONS",
    "DicomFile",
    "DicomFileSystem",
    "DicomFormatError",
    "DicomFrameCache",
    "FetchPlan",
    "FrameIndex",
    "FrameIndexError",
    "IndexStoreWarning",
    "MixedSeriesError",
    "NotDicomError",
    "ObjectChangedError",
    "OffsetTableError",
    "ReadOnlyError",
    "ReadOptions",
    "SeriesError",
    "SkippedObjectWarning",
    "Slide",
    "TransportError",
    "TruncatedDicomError",
    "UnsupportedTransferSyntaxError",
    "annread",
    "imread",
    "open_dicom",
    "open_slide",
    "read_series_volume",
    "segread",
    "srread",
    "to_dask",
]

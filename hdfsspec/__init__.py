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
    NotDicomError,
    ObjectChangedError,
    OffsetTableError,
    ReadOnlyError,
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
    "NotDicomError",
    "ObjectChangedError",
    "OffsetTableError",
    "ReadOnlyError",
    "ReadOptions",
    "TransportError",
    "TruncatedDicomError",
    "UnsupportedTransferSyntaxError",
    "annread",
    "imread",
    "open_dicom",
    "segread",
    "srread",
]

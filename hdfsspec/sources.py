"""What names a DICOM object (a URL, a path, an ``OpenFile``, an open file), opened under
the ``dicom`` layer.

``open_dicom`` returns the frame-aware :class:`~hdfsspec.file.DicomFile`; the highdicom
readers build on it. No highdicom here.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, Union

import fsspec
from fsspec.core import OpenFile

from hdfsspec.file import DicomFile
from hdfsspec.filesystem import DicomFileSystem

__all__ = ["Source", "locate", "open_dicom", "whole"]

Source = Union[str, bytes, "os.PathLike[str]", OpenFile, BinaryIO]
"""What names an object: a URL or local path, an :class:`fsspec.core.OpenFile`, or a
file opened by fsspec (or by :func:`open`, on a local path)."""


def _dicom_url(url: str | bytes | os.PathLike[str]) -> str:
    url = os.fsdecode(url)
    return url if url.startswith(("dicom::", "dicom://")) else "dicom::" + url


def _raw_bytes(path: str, mode: str, compression: str | None = None) -> None:
    if compression is not None or any(c in mode for c in "wax+"):
        raise ValueError(
            f"{path!r}: frames are read from the raw bytes: open it with mode 'rb' "
            f"and no compression (it has mode {mode!r}, compression {compression!r})"
        )


def _opened(source: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of an open file: fsspec's, or a local file of ``open``."""
    fs, path = getattr(source, "fs", None), getattr(source, "path", None)
    if isinstance(fs, fsspec.AbstractFileSystem) and isinstance(path, str):
        _raw_bytes(path, str(getattr(source, "mode", "rb")))
        return fs, path
    raw = source.raw if isinstance(source, io.BufferedReader) else source
    name = getattr(raw, "name", None)
    if isinstance(raw, io.FileIO) and isinstance(name, (str, bytes)):
        path = os.path.abspath(os.fsdecode(name))
        _raw_bytes(path, raw.mode)
        return fsspec.filesystem("file"), path
    raise TypeError(
        "hdfsspec reads an object by URL or path, an fsspec OpenFile, a file opened by "
        f"fsspec or a local file opened with open(path, 'rb'), not {type(source).__name__} "
        "(bytes in memory: use highdicom.imread)"
    )


def locate(
    source: Source, storage_options: dict[str, Any] | None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path ``source`` names (an open file's, under the dicom layer)."""
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(
            f"storage_options must be a dict, not {type(storage_options).__name__} "
            "(lazy_frame_retrieval is a keyword argument)"
        )
    if isinstance(source, (str, bytes, os.PathLike)):
        return fsspec.core.url_to_fs(_dicom_url(source), **(storage_options or {}))
    if storage_options:
        raise TypeError("storage_options apply to a URL; an open file has its filesystem")
    if isinstance(source, OpenFile):
        _raw_bytes(source.path, source.mode, source.compression)
        fs, path = source.fs, source.path
    else:
        fs, path = _opened(source)
    if not isinstance(fs, DicomFileSystem):  # e.g. fsspec.open("s3://...", anon=True)
        fs = fsspec.filesystem("dicom", fs=fs)
    return fs, path


def open_dicom(
    url: Source, storage_options: dict[str, Any] | None = None, **open_kwargs: Any
) -> DicomFile:
    """Open a DICOM object for frame-aware reading.

    Parameters
    ----------
    url : str, bytes, os.PathLike, fsspec.core.OpenFile or file
        ``dicom::s3://bucket/key``, ``s3://bucket/key``, a local path... The
        ``dicom::`` prefix is added when missing. An ``OpenFile``
        (``fsspec.open("s3://...", anon=True)``, with or without ``dicom::``)
        or a file opened by fsspec (``s3.open(key)``) is read again through
        its own filesystem, under the ``dicom`` layer (the file itself is not
        read, moved or closed); so is a local file opened by :func:`open`.
    storage_options : dict, optional
        Options keyed by protocol, as :func:`fsspec.open` takes them, e.g.
        ``{"s3": {"anon": True}}``; top-level keys go to the ``dicom`` layer
        (e.g. ``max_cache_bytes``). Not with an ``OpenFile`` or a file.
    **open_kwargs
        Passed to ``fs.open``.
    """
    fs, path = locate(url, storage_options)
    f = fs.open(path, "rb", **open_kwargs)
    if not isinstance(f, DicomFile):
        raise TypeError(f"{url!r} did not open through the dicom filesystem")
    return f


def whole(url: Source | DicomFile, storage_options: dict[str, Any] | None) -> bytes:
    """The object's bytes in one request (a DicomFile given is read, then closed)."""
    fs, path = locate(url, storage_options)
    try:
        return fs.cat_file(path)
    finally:
        if isinstance(url, DicomFile):
            url.close()

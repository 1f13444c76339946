"""What names a DICOM object (a URL, a path, a UPath, an ``OpenFile``, a file object),
opened under the ``dicom`` layer.

``open_dicom`` returns the frame-aware :class:`~hdfsspec.file.DicomFile`; the highdicom
readers build on it. No highdicom here.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any, BinaryIO, Union

import fsspec
from fsspec.core import OpenFile, split_protocol

from hdfsspec._types import is_instance
from hdfsspec.chain import aliases, chain_protocols, place
from hdfsspec.file import DicomFile
from hdfsspec.fileobj import FileObjectFileSystem, check_file_object
from hdfsspec.filesystem import DICOM_OPTIONS, DicomFileSystem

__all__ = ["Source", "locate", "open_dicom", "whole"]

Source = Union[str, bytes, "os.PathLike[str]", OpenFile, BinaryIO]
"""What names an object: a URL or local path, a :class:`upath.UPath`, an
:class:`fsspec.core.OpenFile`, a file opened by fsspec (or by :func:`open`, on a local
path), or any readable, seekable binary file object."""


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
    """The filesystem and path of an open file: fsspec's, a local file of ``open``, or
    any other binary file object (read through its ``seek`` and ``read``)."""
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
    check_file_object(source)
    objects = FileObjectFileSystem(source)
    return objects, objects.name


def _routed(url: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """``url_to_fs`` of a ``dicom::`` URL, each option given to the layer that takes it
    (see :mod:`hdfsspec.chain`): a key no layer takes raises TypeError, before any request."""
    if {"target_protocol", "fs"} & options.keys():  # a dicom layer's own target
        return _on_target(url, options)
    options = {k: v for k, v in options.items() if k != "fo"}  # fsspec's, not the user's
    inner = options.pop("dicom", {})  # the dicom layer's options under its protocol
    if not isinstance(inner, dict):
        raise TypeError(f"storage_options['dicom'] must be a dict, not {type(inner).__name__}")
    options = {**options, **inner}
    layers = chain_protocols(url)[1:]  # the layers under dicom, as fsspec names them
    given = options.pop("target_options", None)  # the options of the layer under dicom
    mine, per_layer = place(layers, options, DICOM_OPTIONS, url)
    if given is not None and layers:
        per_layer[0] = {**per_layer[0], **given}
    keyed = {p: o for p, o in zip(layers, per_layer, strict=True) if o}
    return fsspec.core.url_to_fs(url, **mine, **keyed)


def _on_target(url: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """A path on the target that ``target_protocol`` or ``fs`` names (``UPath("dicom::...")``'s
    ``path`` and ``storage_options``): no chain in the URL, and no other protocol."""
    path = DicomFileSystem._strip_protocol(url)
    protocol = split_protocol(path)[0]
    target = options.get("target_protocol") or getattr(options.get("fs"), "protocol", None)
    names = target if isinstance(target, tuple | list) else (target,)
    known = {a for name in names if isinstance(name, str) for a in aliases(name)}
    if "::" in path or (protocol is not None and protocol not in known):
        raise TypeError(
            f"{url!r} is not a path of the target that storage_options name "
            f"(target_protocol={target!r}): give its path, or a URL without target_protocol"
        )
    fs = fsspec.filesystem("dicom", **{k: v for k, v in options.items() if k != "fo"})
    return fs, path


def locate(
    source: Source, storage_options: Mapping[str, Any] | None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path ``source`` names (an open file's, under the dicom layer)."""
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(
            f"storage_options must be a dict, not {type(storage_options).__name__} "
            "(lazy_frame_retrieval is a keyword argument)"
        )
    upath = is_instance(source, "upath.core", "UPath")
    if not upath and isinstance(source, (str, bytes, os.PathLike)):
        return _routed(_dicom_url(source), dict(storage_options or {}))
    if storage_options:
        raise TypeError(
            "storage_options apply to a URL; an open file has its filesystem (so has a UPath)"
        )
    if upath:  # its own filesystem (with its storage options) and path
        fs, path = source.fs, source.path  # type: ignore[union-attr]
    elif isinstance(source, OpenFile):
        _raw_bytes(source.path, source.mode, source.compression)
        fs, path = source.fs, source.path
    else:
        fs, path = _opened(source)
    if isinstance(fs, FileObjectFileSystem):  # nothing to persist an index by; not cached
        fs = fsspec.filesystem("dicom", fs=fs, skip_instance_cache=True, index_cache=False)
    elif not isinstance(fs, DicomFileSystem):  # e.g. fsspec.open("s3://...", anon=True)
        fs = fsspec.filesystem("dicom", fs=fs)
    return fs, path


def open_dicom(
    url: Source, storage_options: dict[str, Any] | None = None, **open_kwargs: Any
) -> DicomFile:
    """Open a DICOM object for frame-aware reading.

    Parameters
    ----------
    url : str, bytes, os.PathLike, upath.UPath, fsspec.core.OpenFile or file
        ``dicom::s3://bucket/key``, ``s3://bucket/key``, a local path... The
        ``dicom::`` prefix is added when missing. A ``UPath``, an ``OpenFile``
        (``fsspec.open("s3://...", anon=True)``, with or without ``dicom::``)
        or a file opened by fsspec (``s3.open(key)``) is read again through
        its own filesystem, under the ``dicom`` layer (the file itself is not
        read, moved or closed); so is a local file opened by :func:`open`.
        Any other readable, seekable binary file object (a GCS ``BlobReader``,
        a ``smart_open`` file, :class:`io.BytesIO`...) is read through its
        ``seek`` and ``read``, a few large reads a batch of frames, one at a time
        (see :mod:`hdfsspec.fileobj`); it is not closed.
    storage_options : dict, optional
        Options keyed by protocol, as :func:`fsspec.open` takes them, e.g.
        ``{"s3": {"anon": True}}``, under any alias of the protocol (``"gs"`` or
        ``"gcs"`` for ``gs://``); options of the storage may also be given flat
        (``{"anon": True}``). Keys of the ``dicom`` layer (e.g.
        ``max_cache_bytes``) are top-level. A key that no layer takes raises
        :class:`TypeError` (see :mod:`hdfsspec.chain`). Not with a UPath, an
        ``OpenFile`` or a file.
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

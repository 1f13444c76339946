"""What a :class:`~hdfsspec.file.DicomFile` is opened with: size, version, first bytes.

The open asks the target as little as it can (see :func:`opening`): nothing where a
persisted index can be checked by the file's first request
(:mod:`hdfsspec.unchecked`); else one ranged GET that also gives the size and version
(S3, Azure: :mod:`hdfsspec.io.first_read`), with the end of the object where the last
object the filesystem opened was a dual DICOM-TIFF file; else ``info()``, and the first
bytes then come with the file's first request.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from hdfsspec.cache.persist import object_identity
from hdfsspec.chain import lister
from hdfsspec.io.first_read import first_read
from hdfsspec.io.link import is_large, link_sized_first_request, tail_size
from hdfsspec.io.version_pin import pinned_info

if TYPE_CHECKING:
    from hdfsspec.filesystem import DicomFileSystem

__all__ = ["opening"]


def opening(
    fs: DicomFileSystem,
    path: str,
    kwargs: dict[str, Any] | None = None,
    cache_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What :class:`~hdfsspec.file.DicomFile` is opened with (size, version, first bytes).

    ``kwargs`` of the open: ``size``, ``identity`` and ``info`` (a pickled file opened
    again, pinned to the version it was opened at) and ``verified`` are taken out.
    With a persisted index for ``path`` on a target whose reads can be conditional
    (:func:`~hdfsspec.io.version_pin.pinned_info`), nothing is fetched: the file's
    first request checks the saved version.
    """
    kwargs = {} if kwargs is None else kwargs
    size = kwargs.pop("size", None)
    identity, info = kwargs.pop("identity", None), kwargs.pop("info", None)
    verified = kwargs.pop("verified", True)  # False: check the saved version, not now
    store = fs.index_store
    latest = None
    if size is None and store is not None:
        latest = store.latest(fs.target_protocol, path)
    unchecked = None if latest is None or not verified else pinned_info(fs.fs, path, latest)
    if unchecked is not None:  # its reads are conditional on the saved version: none now
        info, identity, size, verified = unchecked, latest, unchecked["size"], False
    if size is None:  # the size, and the version that keys the index store
        # with an entry for this path, the object's identity is all the open needs: a
        # byte (the entry has the header); it is used only if the identity still matches
        info, first, end = _first_read(fs, path, known=latest is not None)
        size = info["size"]
        if first is not None:  # one GET gave the info and the first bytes (and the end)
            fs.saw_prefix(first)
            cache_options = {"prefix": first, "tail": end, **(cache_options or {})}
        else:  # the first bytes come with the file's first request (and its end with them)
            large = fs._dual_tiff and is_large(size, fs.options, fs.link.estimate)
            hint = {"tail_wanted": large, "on_prefix": fs.saw_prefix}
            cache_options = {**hint, **(cache_options or {})}
        identity = object_identity(fs.target_protocol, path, info)
    return {
        "cache_options": cache_options,
        "size": size,
        "identity": identity,
        "etag": None if info is None else info.get("ETag"),
        "verified": verified,
        "info": info,
    }


def _first_read(fs: DicomFileSystem, path: str, known: bool) -> tuple[dict[str, Any], Any, Any]:
    """``(info, first bytes, end)`` of ``path``: one GET where the target allows (its
    first bytes, and its end where the last object opened was a dual DICOM-TIFF; one byte
    with a persisted entry), else ``(info(), None, None)``."""
    try:
        nbytes = fs.options.first_request or link_sized_first_request(fs.link.estimate)
        # the size is not known before the first GET: the end of the object is fetched
        # with it where the last object opened was a dual DICOM-TIFF (a bucket of slides)
        tail = tail_size(fs.options.tail_request, nbytes) if fs._dual_tiff else 0
        got = first_read(
            fs.fs, path, 1 if known else nbytes, 0 if known else tail, fs.signed_http()
        )
    except FileNotFoundError:  # an object store's "directory" is no object: say so
        if lister(fs.fs).isdir(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path) from None
        raise
    info, first, end = (lister(fs.fs).info(path), None, None) if got is None else got
    if info.get("type") == "directory":  # the target would give a 0-byte file
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return info, first, end

"""Keep the reads of an open object to the version that was opened.

A frame index is only right for the bytes it was built from: an object replaced
by another of the same size while it is open must raise
:class:`~hdfsspec.errors.ObjectChangedError`, never serve the new object's bytes
at the old object's offsets. (A shorter replacement is caught by every read's
length check; signed S3 reads send ``If-Match``, see :mod:`hdfsspec.io.signed`.)
:class:`VersionPin` does it for two more kinds of target:

* HTTP(S) (fsspec's :class:`~fsspec.implementations.http.HTTPFileSystem`): every
  ranged GET sends ``If-Match`` with the strong ETag of the open, as S3, GCS,
  Azure, nginx and Apache honour it; a 412 answer is checked with a new ``info()``
  (a server that answers 412 to an unchanged ETag gets plain GETs from then on:
  some proxies and CDNs do not compare ETags as their origin does). Weak ETags
  (``W/"..."``) never match a strong comparison and are not sent.
* Azure Blob (adlfs): ranges are read with the blob client's ``download_blob``
  as adlfs reads them, with the open's ETag as an ``If-Match`` condition (adlfs's
  ``cat_file`` passes no such argument); Azure's ``ResourceModifiedError`` is
  :class:`~hdfsspec.errors.ObjectChangedError`.
* S3 (s3fs) read by s3fs, i.e. without signed reads (``signed_urls=False``, or
  the ranges signed reads hand back after a failure): ``GetObject`` with the open's
  ETag as ``IfMatch``, as s3fs's own files read; on a version-aware filesystem the
  open's ``VersionId`` instead, which reads the opened version even once replaced.
  A ``PreconditionFailed`` is :class:`~hdfsspec.errors.ObjectChangedError`.
* Local files: after each batch the file's inode, size and modification time
  are compared with the open's (``os.stat``: a few microseconds).
* fsspec's memory filesystem: after each batch the object must still be the one
  opened (writing a path makes a new one), of the same size.

GCS is read as it is: gcsfs takes ``generation=``, but the emulator the tests run
ignores it, so it could not be tested.

Transient failures are read again (:mod:`hdfsspec.io.retry`), with the same condition:
an S3 or Azure range's GET and body read are one attempt (s3fs retries the request,
not the body this module reads), and the ranges of an HTTP target that failed
transiently are read again (fsspec's HTTP filesystem does not retry). A body shorter
than its range is a transient failure there, never served.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import fsspec
from fsspec.asyn import sync
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from hdfsspec._types import http_status, is_instance
from hdfsspec.errors import ObjectChangedError
from hdfsspec.io.retry import check_length, object_end, retry_async, retry_ranges, s3_get
from hdfsspec.io.stream import Sink, stream_ranges

__all__ = ["VersionPin", "pinned_info"]

_PRECONDITION_FAILED = 412
_AZURE_CONCURRENCY = 64
_S3_CONCURRENCY = 64


class VersionPin:
    """Request arguments and checks that tie the reads of ``path`` to one version.

    Parameters
    ----------
    target : callable
        Returns the target filesystem (a new one in a forked child).
    path : str
        The object's path on ``fs``.
    info : dict, optional
        The target's ``info()`` of the object at the open: HTTP reads are pinned to
        its ``ETag`` (none without it). Local files are pinned to ``os.stat`` now.

    Attributes
    ----------
    kwargs : dict
        Extra arguments of the target's ``cat_ranges`` (``headers`` with ``If-Match``).
    """

    def __init__(
        self,
        target: Callable[[], fsspec.AbstractFileSystem],
        path: str,
        info: dict[str, Any] | None = None,
    ) -> None:
        self._target, self.path = target, path
        fs = target()
        self.kwargs: dict[str, Any] = {}
        self._etag: str | None = None
        self._azure_etag: str | None = None
        self._s3: dict[str, str] | None = None  # the GetObject arguments that pin a read
        self._stat: tuple[int, int, float] | None = None
        self._local = ""  # the OS path of a local file
        self._memory: tuple[Any, int] | None = None  # a memory file, and its size
        if is_instance(fs, "adlfs", "AzureBlobFileSystem"):
            etag = (info or {}).get("etag")
            self._azure_etag = etag if isinstance(etag, str) and etag else None
        elif is_instance(fs, "fsspec.implementations.http", "HTTPFileSystem"):
            etag = (info or {}).get("ETag")
            if isinstance(etag, str) and etag.startswith('"'):  # strong: W/"..." never matches
                self._etag = etag
                self.kwargs = {"headers": {"If-Match": etag}}
        elif is_instance(fs, "s3fs", "S3FileSystem"):
            self._s3 = _s3_pin(fs, path, info or {})
        elif isinstance(fs, LocalFileSystem):
            self._local = fs._strip_protocol(path)
            known = info or {}
            if all(isinstance(known.get(k), int | float) for k in ("ino", "size", "mtime")):
                self._stat = (known["ino"], known["size"], known["mtime"])  # at the open
            else:
                self._stat = _signature(self._local)
        elif isinstance(fs, MemoryFileSystem):
            held = fs.store.get(fs._strip_protocol(path))
            self._memory = None if held is None else (held, held.size)

    def _arguments(self, fs: fsspec.AbstractFileSystem) -> dict[str, Any]:
        """:attr:`kwargs`, with the headers the target sends anyway (fsspec's HTTP filesystem
        replaces its own ``headers`` by those given to a call: an Authorization header
        set on it must stay)."""
        if "headers" not in self.kwargs:
            return self.kwargs
        own = (getattr(fs, "kwargs", None) or {}).get("headers") or {}
        return {**self.kwargs, "headers": {**own, **self.kwargs["headers"]}}

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The target filesystem."""
        return self._target()

    def read(self, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        """Read ``ranges`` through the target, pinned; failures are returned, not raised.

        Raises
        ------
        ObjectChangedError
            The object is not the one that was opened.
        """
        fs = self.fs
        if self._azure_etag is not None:
            return list(sync(fs.loop, self._azure_ranges, ranges))
        if self._s3:
            return list(sync(fs.loop, self._s3_ranges, ranges))
        if _uncached_ranges_broken(fs, self.path):
            fs.open(self.path, "rb").close()  # the whole file into the local cache first
        if is_instance(fs, "fsspec.implementations.http", "HTTPFileSystem"):
            # fsspec's HTTP filesystem retries nothing: transient failures are read again
            return retry_ranges(lambda again: self._cat(fs, again), ranges)[0]
        return self._cat(fs, ranges)

    @property
    def streams(self) -> bool:
        """Whether :meth:`stream` can start GETs here (an HTTP(S) target)."""
        return is_instance(self.fs, "fsspec.implementations.http", "HTTPFileSystem")

    def stream(self, ranges: Sequence[tuple[int, int]], sink: Sink) -> Future[None] | None:
        """Start GETs of ``ranges`` whose bodies go to ``sink`` as they arrive, pinned
        (:func:`~hdfsspec.io.stream.stream_ranges`): an HTTP(S) target only, else None
        (the caller reads them with :meth:`read`, as what a failed stream left)."""
        if not ranges or not self.streams:
            return None
        return stream_ranges(self.fs, self.path, ranges, self.kwargs.get("headers", {}), sink)

    def _cat(self, fs: fsspec.AbstractFileSystem, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        """One ``cat_ranges`` of ``ranges``, pinned, checked (:meth:`check`)."""
        paths = [self.path] * len(ranges)
        starts, stops = [a for a, _ in ranges], [b for _, b in ranges]
        out = list(fs.cat_ranges(paths, starts, stops, **self._arguments(fs)))
        again = self.check(ranges, out)
        if again:
            more = fs.cat_ranges(
                [self.path] * len(again), [starts[k] for k in again], [stops[k] for k in again]
            )
            for k, data in zip(again, more, strict=True):
                out[k] = data
        return out

    async def _azure_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        fs = self.fs
        container, blob, version = fs.split_path(fs._strip_protocol(self.path))
        limit = asyncio.Semaphore(_AZURE_CONCURRENCY)

        async def attempt(client: Any, start: int, stop: int) -> bytes:
            """One download and its body, with the open's ETag as condition."""
            stream = await client.download_blob(
                offset=start,
                length=stop - start,
                version_id=version,
                etag=self._azure_etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=getattr(fs, "max_concurrency", None) or 1,
                **fs._timeout_kwargs,
            )
            data = await stream.readall()
            return check_length(data, start, object_end(stream.properties.content_range, stop))

        async def one(client: Any, start: int, stop: int) -> Any:
            async with limit:
                try:
                    return await retry_async(lambda: attempt(client, start, stop))
                except ResourceModifiedError:  # returned, as cat_ranges(on_error="return")
                    return self._changed(start, f"ETag {self._azure_etag} no longer matches")
                except ResourceNotFoundError:  # as adlfs says it
                    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.path)
                except Exception as exc:
                    return exc

        async with fs.service_client.get_blob_client(container=container, blob=blob) as client:
            return list(await asyncio.gather(*(one(client, a, b) for a, b in ranges)))

    async def _s3_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        fs, pin = self.fs, self._s3 or {}
        bucket, key, _ = fs.split_path(self.path)
        limit = asyncio.Semaphore(_S3_CONCURRENCY)

        async def attempt(start: int, stop: int) -> Any:
            """One GET and its body (:func:`~hdfsspec.io.retry.s3_get`); a body shorter
            than the range is raised: read again."""
            got = await s3_get(fs, bucket, key, start, stop, **pin)
            if isinstance(got, Exception):
                return got
            resp, data = got
            return check_length(data, start, object_end(resp.get("ContentRange"), stop))

        async def one(start: int, stop: int) -> Any:
            if stop <= start:
                return b""
            async with limit:
                try:
                    got = await retry_async(lambda: attempt(start, stop))
                except Exception as exc:  # returned, as cat_ranges(on_error="return")
                    got = exc
            if isinstance(got, Exception) and _precondition_failed(got):
                return self._changed(start, f"ETag {pin.get('IfMatch')} no longer matches")
            return got

        return list(await asyncio.gather(*(one(a, b) for a, b in ranges)))

    def check(self, ranges: Sequence[tuple[int, int]], out: list[Any]) -> list[int]:
        """Check one batch's results; return the indices to read again without the pin.

        Raises
        ------
        ObjectChangedError
            The object is not the one that was opened.
        """
        if self._stat is not None:
            now = _signature(self._local)
            if now != self._stat:
                raise self._changed(ranges[0][0] if ranges else 0, "inode, size or mtime")
            return []
        if self._memory is not None:
            fs = self.fs
            held, size = self._memory
            now = fs.store.get(fs._strip_protocol(self.path))
            if now is not held or now.size != size:
                raise self._changed(ranges[0][0] if ranges else 0, "a new memory file")
            return []
        refused = [k for k, data in enumerate(out) if http_status(data) == _PRECONDITION_FAILED]
        if not refused or self._etag is None:
            return []
        info = self.fs.info(self.path)
        if info.get("ETag") != self._etag:
            raise self._changed(ranges[refused[0]][0], f"ETag {self._etag} no longer matches")
        self.kwargs = {}  # the server refused an ETag it still reports: plain GETs
        self._etag = None
        return refused

    def _changed(self, offset: int, what: str) -> ObjectChangedError:
        return ObjectChangedError(
            f"the object was replaced while being read ({what})",
            path=self.fs.unstrip_protocol(self.path),
            offset=offset,
        )


def pinned_info(
    fs: fsspec.AbstractFileSystem, path: str, identity: dict[str, Any]
) -> dict[str, Any] | None:
    """The ``info`` of the version ``identity`` names, if every read of ``path`` can be
    made conditional on it; else None.

    A file opened with it reads nothing at the open: its first request, conditional on
    that version (``If-Match``), checks it. S3 (without a version in the path), HTTP
    (a strong ETag) and Azure only: GCS reads are not pinned, and the local and memory
    filesystems' ``info()`` costs no request.
    """
    key, _, value = str(identity.get("version", "")).partition("=")
    if ";" in value or not value or not isinstance(identity.get("size"), int):
        return None
    if is_instance(fs, "s3fs", "S3FileSystem"):
        pinned = key == "ETag" and not fs.split_path(path)[2]
    elif is_instance(fs, "fsspec.implementations.http", "HTTPFileSystem"):
        pinned = key == "ETag" and value.startswith('"')
    else:
        pinned = key == "etag" and is_instance(fs, "adlfs", "AzureBlobFileSystem")
    if not pinned:
        return None
    return {"name": path, "size": identity["size"], "type": "file", key: value}


def _s3_pin(fs: Any, path: str, info: dict[str, Any]) -> dict[str, str] | None:
    """``VersionId`` (version-aware, not already in the path) or ``IfMatch``, or None."""
    _, _, in_path = fs.split_path(path)
    if in_path:
        return None  # s3fs reads that version
    version, etag = info.get("VersionId"), info.get("ETag")
    if getattr(fs, "version_aware", False) and isinstance(version, str) and version:
        return {"VersionId": version}
    return {"IfMatch": etag} if isinstance(etag, str) and etag else None


def _precondition_failed(exc: BaseException) -> bool:
    """Whether s3fs's error is S3's ``PreconditionFailed`` (an ``OSError(EINVAL)``)."""
    cause = getattr(getattr(exc, "__cause__", None), "response", None) or {}
    if cause.get("Error", {}).get("Code") == "PreconditionFailed":
        return True
    return isinstance(exc, OSError) and exc.errno == errno.EINVAL and "condition" in str(exc)


def _signature(path: str) -> tuple[int, int, float]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime  # as fsspec's local info() has them


def _uncached_ranges_broken(fs: Any, path: str) -> bool:
    """Whether ``fs.cat_ranges`` of ``path`` would fail: a file not yet in simplecache.

    Before fsspec 2026.9, ``SimpleCacheFileSystem.cat_ranges`` of a file it has not
    cached passes ``[False, ...]`` to ``get()`` as the local paths (``AttributeError``
    inside ``LocalFileSystem``); once the file is cached it reads it locally. Fixed
    versions have ``_local_paths_for_ranges``.
    """
    if getattr(type(fs), "_local_paths_for_ranges", None) is not None:
        return False  # (on the class: a caching filesystem hands other lookups to its target)
    if not is_instance(fs, "fsspec.implementations.cached", "SimpleCacheFileSystem"):
        return False
    return not fs._check_file(path)

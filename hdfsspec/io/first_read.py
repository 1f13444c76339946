"""Open without a HEAD: one ranged GET that returns the first bytes and the object's info.

Opening an object needs its size (and its version, which keys the persisted
index). Most filesystems learn them with ``info()``, a HEAD request, before the
first GET. Where the target's API returns them with a ranged GET, the open costs
one request instead of two, and its bytes are the header's first request: S3's
``GetObject`` answers ``Content-Range: bytes 0-N/SIZE`` and the ETag; Azure's
``download_blob`` the same Content-Range, the ETag and the modification time.

Other targets return None here and are opened with ``info()``. (GCS's media GET
has the size in Content-Range and the generation in ``x-goog-generation``, but the
emulator the tests run lacks the latter: not done, untested.)

The GET and the read of its body are one attempt of :func:`hdfsspec.io.retry.retry_async`:
a body cut short or reset, or shorter than its Content-Range says, is read again
(s3fs retries only the request, the body is read here); what still fails is a
:class:`~hdfsspec.errors.TransportError` naming the object and the range.
"""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.asyn import sync

from hdfsspec._log import get_logger
from hdfsspec._types import is_instance
from hdfsspec.io.retry import (
    ShortRead,
    is_transient,
    reason,
    retry_async,
    s3_get,
    transport_error,
)
from hdfsspec.io.signed_first import signed_first

__all__ = ["first_read"]

_log = get_logger(__name__)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)$")


Tail = tuple[int, bytes] | None
"""``(offset, bytes)`` of the end of an object, fetched with its first bytes, or None."""


def first_read(
    fs: fsspec.AbstractFileSystem,
    path: str,
    nbytes: int,
    tail: int = 0,
    http: Callable[[], fsspec.AbstractFileSystem] | None = None,
) -> tuple[dict[str, Any], bytes, Tail] | None:
    """Return ``(info, first bytes, tail)`` of ``path`` in one round, or None if not possible.

    With ``tail``, the last ``tail`` bytes are asked for in the same round, by a suffix
    range (``bytes=-N``, S3 only): ``tail`` is then their ``(offset, bytes)``, or None
    when they are not needed (the first bytes hold them), failed, or came from another
    version of the object (best effort: the first bytes decide). ``info`` has the
    ``size``, ``name``, ``type`` and version keys (``ETag``...) of the target's
    ``info()``. Missing objects and denied access raise the target's
    own errors (``FileNotFoundError``, ``PermissionError``); a transport failure that
    outlasts the retries raises :class:`~hdfsspec.errors.TransportError`.

    With ``http`` (the factory of signed reads' HTTP filesystem, for an S3 target whose
    reads are signed), the GET goes through a presigned URL first
    (:mod:`hdfsspec.io.signed_first`); where that does not answer, through s3fs.
    """
    reader = _reader(fs)
    if reader is None or nbytes < 1:
        return None
    if http is not None and reader is _s3_first:
        signed = _signed_first(fs, http, path, nbytes, tail)
        if signed is not None:
            return signed
    try:
        return sync(fs.loop, reader, fs, path, nbytes, tail)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as exc:
        if not is_transient(exc):
            if isinstance(exc, OSError | ValueError | KeyError):  # e.g. an empty object
                return None  # no range to read: info() says what it is
            raise
        error = exc
    raise transport_error(error, fs.unstrip_protocol(path), 0, nbytes)


def _reader(fs: fsspec.AbstractFileSystem) -> Any:
    """The one-request read of ``fs``'s kind, or None."""
    if is_instance(fs, "s3fs", "S3FileSystem"):
        return _s3_first
    if is_instance(fs, "adlfs", "AzureBlobFileSystem"):
        return _az_first
    return None


def _size_from(content_range: Any, data: bytes, nbytes: int) -> int | None:
    """The object's size from ``Content-Range: bytes 0-N/SIZE`` of a first read, if usable.

    Raises :class:`~hdfsspec.io.retry.ShortRead` (read again) when the body holds fewer
    bytes than asked for and the object has (whatever the header says of the range).
    """
    match = _CONTENT_RANGE.match(str(content_range or ""))
    if match is None or int(match.group(1)) != 0:
        return None
    size = int(match.group(3))
    if len(data) < min(nbytes, size):
        raise ShortRead(0, min(nbytes, size), len(data))
    if int(match.group(2)) + 1 != len(data):
        return None
    return size


def _signed_first(
    fs: Any, http: Callable[[], Any], path: str, nbytes: int, tail: int
) -> tuple[dict[str, Any], bytes, Tail] | None:
    """The first read through a presigned URL, or None (then s3fs reads)."""
    try:
        target = http()
        if getattr(target, "loop", None) is not fs.loop:
            return None  # its session lives on another loop
        got = sync(fs.loop, signed_first, fs, target, path, nbytes, tail)
        if got is None:
            return None
        (resp, data), end = got
        size = _size_from(resp.get("ContentRange"), data, nbytes)
    except Exception as exc:  # whatever it was, s3fs reads now, and says it its way
        _log.debug("%s: signed first read failed (%s): through the target", path, reason(exc))
        return None
    if size is None:
        return None
    info = _s3_info(fs, path, size, resp)
    return info, data, (_checked_tail(end, info, len(data)) if tail > 0 else None)


def _s3_info(fs: Any, path: str, size: int, resp: dict[str, Any]) -> dict[str, Any]:
    """The keys of s3fs's ``info()`` from a ``GetObject`` answer (the persisted index's
    identity is the same whichever read it came from)."""
    bucket, key, _ = fs.split_path(path)
    modified = resp.get("LastModified")
    if isinstance(modified, str):  # an HTTP header: parsed as botocore parses it
        from botocore.utils import parse_timestamp

        modified = parse_timestamp(modified)
    info = {
        "name": f"{bucket}/{key}",
        "size": size,
        "type": "file",
        "ETag": resp.get("ETag"),
        "LastModified": modified,
    }
    if resp.get("VersionId"):
        info["VersionId"] = resp["VersionId"]
    return info


async def _s3_first(
    fs: Any, path: str, nbytes: int, tail: int = 0
) -> tuple[dict[str, Any], bytes, Tail] | None:
    if tail > 0:  # the end of the object, in the same round
        first, end = await asyncio.gather(
            _s3_first(fs, path, nbytes), _s3_tail(fs, path, tail), return_exceptions=True
        )
        if isinstance(first, BaseException):
            raise first
        if first is None:
            return None
        info, data, _ = first
        return info, data, _checked_tail(end, info, len(data))
    bucket, key, version = fs.split_path(path)
    if not key:
        return None  # a bucket: info() says what it is
    extra = {"VersionId": version} if version else {}

    async def attempt() -> Any:
        """One GET and its body (:func:`~hdfsspec.io.retry.s3_get`); a body shorter than
        asked is raised: retried."""
        got = await s3_get(fs, bucket, key, 0, nbytes, **extra)
        if isinstance(got, Exception):
            return got
        resp, data = got
        return resp, data, _size_from(resp.get("ContentRange"), data, nbytes)

    got = await retry_async(attempt)
    if isinstance(got, FileNotFoundError) and not got.filename:
        # s3fs's message alone ("The specified key does not exist."): named, as s3fs's
        # own open names it
        raise FileNotFoundError(errno.ENOENT, str(got), path) from got
    if isinstance(got, BaseException):
        raise got
    resp, data, size = got
    if size is None:
        return None  # no usable Content-Range: let info() say
    return _s3_info(fs, path, size, resp), data, None


async def _s3_tail(fs: Any, path: str, nbytes: int) -> tuple[Any, bytes] | None:
    """The last ``nbytes`` of ``path`` (a suffix range): ``(response, body)``, or None."""
    bucket, key, version = fs.split_path(path)
    if not key:
        return None
    extra = {"VersionId": version} if version else {}
    got = await retry_async(lambda: s3_get(fs, bucket, key, -nbytes, 0, **extra))
    return None if isinstance(got, BaseException) else got


def _checked_tail(got: Any, info: dict[str, Any], held: int) -> Tail:
    """``(offset, bytes)`` of a suffix read, if it is of the object ``info`` describes and
    reaches beyond the ``held`` first bytes; else None."""
    if got is None or isinstance(got, BaseException):
        return None
    resp, data = got
    match = _CONTENT_RANGE.match(str(resp.get("ContentRange") or ""))
    if match is None or resp.get("ETag") != info.get("ETag"):
        return None  # no range, or another version of the object than the first bytes'
    start, stop, size = (int(g) for g in match.groups())
    if size != info["size"] or stop + 1 != size or len(data) != size - start or size <= held:
        return None
    return start, data


async def _az_first(
    fs: Any, path: str, nbytes: int, tail: int = 0
) -> tuple[dict[str, Any], bytes, Tail] | None:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
    )

    container, blob, version = fs.split_path(fs._strip_protocol(path))
    if version or not blob:
        return None  # versions and containers: info() knows them

    async def attempt() -> tuple[Any, bytes, int | None]:
        """One download and its body, checked against its Content-Range."""
        async with fs.service_client.get_blob_client(container=container, blob=blob) as bc:
            stream = await bc.download_blob(offset=0, length=nbytes, **fs._timeout_kwargs)
            data = await stream.readall()
        return stream, data, _size_from(stream.properties.content_range, data, nbytes)

    try:
        stream, data, size = await retry_async(attempt)
    except ResourceNotFoundError as exc:
        raise FileNotFoundError(path) from exc
    except ClientAuthenticationError as exc:
        raise PermissionError(path) from exc
    except HttpResponseError as exc:  # e.g. an empty blob has no range to read: info() says
        if is_transient(exc):
            raise
        return None
    if size is None:
        return None
    props = stream.properties
    info = {  # the keys of adlfs's info(): the persisted index's identity is the same
        "name": f"{container}/{blob}",
        "size": size,
        "type": "file",
        "etag": props.etag,
        "last_modified": props.last_modified,
    }
    return info, data, None  # no suffix ranges in Azure's API: no tail

"""Open without a HEAD: one ranged GET that returns the first bytes and the object's info.

Opening an object needs its size (and its version, which keys the persisted
index). Most filesystems learn them with ``info()``, a HEAD request, before the
first GET. Where the target's API returns them with a ranged GET (S3's
``GetObject`` answers ``Content-Range: bytes 0-N/SIZE`` and the ETag), the open
costs one request instead of two, and its bytes are the header's first request.

Targets without such a request return None here and are opened with ``info()``.
"""

from __future__ import annotations

import re
from typing import Any

import fsspec
from fsspec.asyn import sync

__all__ = ["first_read"]

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)$")


def first_read(
    fs: fsspec.AbstractFileSystem, path: str, nbytes: int
) -> tuple[dict[str, Any], bytes] | None:
    """Return ``(info, first bytes)`` of ``path`` in one request, or None if not possible.

    ``info`` has the ``size``, ``name``, ``type`` and version keys (``ETag``...) of
    the target's ``info()``. Missing objects and denied access raise the target's
    own errors (``FileNotFoundError``, ``PermissionError``).
    """
    try:
        import s3fs
    except ImportError:  # pragma: no cover - the s3 extra is not installed
        return None
    if not isinstance(fs, s3fs.S3FileSystem) or nbytes < 1:
        return None
    try:
        return sync(fs.loop, _s3_first, fs, path, nbytes)
    except (FileNotFoundError, PermissionError):
        raise
    except (OSError, ValueError, KeyError):  # e.g. an empty object: no range to read
        return None


async def _s3_first(fs: Any, path: str, nbytes: int) -> tuple[dict[str, Any], bytes] | None:
    bucket, key, version = fs.split_path(path)
    extra = {"VersionId": version} if version else {}
    resp = await fs._call_s3(
        "get_object", Bucket=bucket, Key=key, Range=f"bytes=0-{nbytes - 1}", **extra
    )
    try:
        data = await resp["Body"].read()
    finally:
        resp["Body"].close()
    match = _CONTENT_RANGE.match(str(resp.get("ContentRange", "")))
    if match is None or int(match.group(1)) != 0 or int(match.group(2)) + 1 != len(data):
        return None  # no usable Content-Range: let info() say
    info = {
        "name": f"{bucket}/{key}",
        "size": int(match.group(3)),
        "type": "file",
        "ETag": resp.get("ETag"),
        "LastModified": resp.get("LastModified"),
    }
    if resp.get("VersionId"):
        info["VersionId"] = resp["VersionId"]
    return info, data

"""The first GET of an S3 object through a presigned URL, as signed reads make the others.

s3fs's first ``GetObject`` of a process builds aiobotocore's HTTP session, and its TLS
context with it (the CA bundle read and parsed: about 45 ms, even for a plain
``http://`` endpoint), before the request is sent. Where the object's later reads go
through a presigned URL anyway (:mod:`hdfsspec.io.signed`), the first one can too: the
URL is signed by the target's client (no request), the GET goes through the HTTP
session of signed reads (aiohttp's default TLS context is made when aiohttp is
imported), and its answer is S3's, with the object's info in its headers
(``Content-Range``, ``ETag``, ``Last-Modified``, ``x-amz-version-id``).

Anything short of a ``206 Partial Content`` answer whose range and body agree (an
error status, a dropped connection, a proxy in the environment, a body cut short...)
returns None: the caller reads through s3fs, with its retries and its own errors. A
``200`` answer (a server that ignored the range) is not read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hdfsspec._log import get_logger
from hdfsspec.io.redact import install as install_redaction
from hdfsspec.io.retry import reason
from hdfsspec.io.signed import EXPIRES, proxied

__all__ = ["signed_first"]

_log = get_logger(__name__)

Answer = tuple[dict[str, str], bytes]
"""The response fields S3's ``GetObject`` reports (``ContentRange``, ``ETag``,
``LastModified``, ``VersionId``) and the body."""


async def signed_first(
    fs: Any, http: Any, path: str, nbytes: int, tail: int = 0
) -> tuple[Answer, Answer | BaseException | None] | None:
    """GET the first ``nbytes`` of ``path`` (and its last ``tail``) through a presigned URL.

    Parameters
    ----------
    fs : s3fs.S3FileSystem
        The target (it signs the URL).
    http : fsspec.implementations.http.HTTPFileSystem
        The filesystem of signed reads, on the loop of ``fs``.
    path : str
        The object's path (without a version: a versioned path returns None).
    nbytes : int
        The first bytes to fetch.
    tail : int, optional
        The last bytes to fetch in the same round (a suffix range), if more than 0.

    Returns
    -------
    tuple or None
        ``(first, end)``: each an answer (the response's fields as ``get_object``
        names them, and the body); ``end`` is None without ``tail``, or the failure
        of its GET. None where the first GET did not answer with its range.
    """
    _, key, version = fs.split_path(path)
    if not key or version:
        return None
    try:
        await fs.set_session()
        url = await fs._url(path, expires=EXPIRES)
    except Exception as exc:  # signing failed: s3fs says why, its way
        _log.debug("%s: not signed (%s): first read through the target", path, reason(exc))
        return None
    if proxied(url):  # botocore would go through the proxy: so must we, by s3fs
        return None
    install_redaction()  # the URL is a bearer credential: never in a log
    session = await http.set_session()
    spans = [f"bytes=0-{nbytes - 1}"] + ([f"bytes=-{tail}"] if tail > 0 else [])
    gets = (_get(session, url, span) for span in spans)
    got = await asyncio.gather(*gets, return_exceptions=True)
    first = got[0]
    if not isinstance(first, tuple):
        why = "not a ranged answer" if first is None else reason(first)
        _log.debug("%s: signed first read failed (%s): through the target", path, why)
        return None
    return first, (got[1] if tail > 0 else None)


async def _get(session: Any, url: str, span: str) -> Answer | None:
    """One ranged GET: the fields of a ``206`` answer and its body, else None."""
    from yarl import URL  # aiohttp's: the URL exactly as signed, not quoted again

    async with session.get(URL(url, encoded=True), headers={"Range": span}) as response:
        if response.status != 206:
            return None  # an error, or the whole object (a range ignored): not read
        data = await response.read()
        headers = response.headers
        fields = {
            "ContentRange": headers.get("Content-Range", ""),
            "ETag": headers.get("ETag"),
            "LastModified": headers.get("Last-Modified"),
            "VersionId": headers.get("x-amz-version-id"),
        }
        return {k: v for k, v in fields.items() if v is not None}, data

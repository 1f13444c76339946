"""Set up an S3 target's client and HTTP sessions in the background, before the first read.

The first request of a process pays for what its client sets up lazily: s3fs builds
the botocore client (``set_session``), then aiobotocore builds the TLS context of its
connection pool (loading the CA bundle: about 50 ms, even for a plain ``http://``
endpoint) and its aiohttp session; signed reads make their own HTTP filesystem (and
need only the client of s3fs, which signs their URLs: the first read of an object goes
through a signed URL too, :mod:`hdfsspec.io.signed_first`). None of this needs the
network. :func:`warm_up` does it in a daemon thread as soon as the
``dicom`` filesystem is made, so that a first open which comes some time later (a
worker that unpickled its filesystem, a data loader's first item) finds it done; an
open that comes at once waits for the same locks and loses nothing.

Nothing is sent: no request and no connection. Any failure is left to the first real
request, which meets it again and reports it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hdfsspec._types import is_instance

_log = logging.getLogger("hdfsspec.io.warm")

_WARMED = "_hdfsspec_warmed"
"""Attribute set on a target once it was warmed (each target instance once)."""


def warm_up(fs: Any, *others: Callable[[], Any], requests: bool = True) -> threading.Thread | None:
    """Set up ``fs``'s client and HTTP session in a daemon thread (an s3fs target only).

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The target filesystem.
    *others : callable
        Also called in the thread, after (e.g. the factory of signed reads' HTTP
        filesystem); their exceptions are ignored too.
    requests : bool, optional
        Whether to make the session of the client's own requests too (False where
        reads are signed: the client only signs their URLs).

    Returns
    -------
    threading.Thread or None
        The thread, or None when there is nothing to do (not s3fs, or warmed already).
    """
    if not is_instance(fs, "s3fs", "S3FileSystem") or getattr(fs, _WARMED, False):
        return None
    try:
        setattr(fs, _WARMED, True)
    except AttributeError:  # a target that takes no attribute is not warmed
        return None
    thread = threading.Thread(
        target=_warm, args=(fs, others, requests), name="hdfsspec-warm-up", daemon=True
    )
    thread.start()
    return thread


def _warm(fs: Any, others: tuple[Callable[[], Any], ...], requests: bool) -> None:
    from fsspec.asyn import sync

    try:
        sync(fs.loop, _session, fs, requests)
    except Exception as exc:  # the first request meets it again, and reports it
        _log.debug(
            "warming the S3 client up failed (%s): left to the first request", type(exc).__name__
        )
    for other in others:
        try:
            other()
        except Exception as exc:
            _log.debug("warm-up step failed (%s)", type(exc).__name__)


async def _session(fs: Any, requests: bool = True) -> None:
    """The botocore client, then (with ``requests``) the aiohttp session its requests to
    the endpoint use: not where reads are signed (the client only signs their URLs)."""
    client = await fs.set_session()
    if not requests:
        return
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    get_session = getattr(http, "_get_session", None)
    proxies = getattr(http, "_proxy_config", None)
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    if get_session is None or proxies is None or endpoint is None:
        return  # another aiobotocore: its session is made by the first request
    await get_session(proxies.proxy_url_for(endpoint))

"""Keep signed URLs, tokens and credentials out of log records, exceptions and reprs.

A presigned URL is a bearer credential for as long as it is valid: whoever reads it
reads the object. Signed S3 reads (:mod:`hdfsspec.io.signed`) hand one to fsspec's HTTP
filesystem, which logs every URL it fetches at DEBUG (logger ``fsspec.http``), and
aiohttp's errors name the URL they failed on. This module

* redacts the secret parts of text (:func:`redact_url`): the values of signing query
  parameters (S3 v2 and v4, GCS, Azure SAS, OAuth tokens), the user info of a URL,
  ``Bearer`` tokens, and credentials in a ``repr`` of keyword arguments or a dict.
  The scheme, host, path (which name the object) and other parameters are kept;
* rewrites log records of the HTTP layers that hdfsspec drives
  (:class:`RedactingFilter`, added by :func:`install`; no level, handler or other
  setting of the user's logging is changed);
* gives an exception without the secrets its message, arguments, chained causes and
  notes held (:func:`scrub`), of the same type wherever it can be rebuilt.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from hdfsspec._types import is_instance

__all__ = ["LOGGERS", "REDACTED", "RedactingFilter", "install", "leaks", "redact_url", "scrub"]

REDACTED = "REDACTED"
"""What replaces a secret."""

LOGGERS = (
    "fsspec",
    "fsspec.asyn",
    "fsspec.http",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "asyncio",
)
"""Loggers that get the filter: fsspec's (``fsspec.http`` logs each URL it fetches,
``fsspec.asyn`` the failures of background tasks), aiohttp's, and asyncio's (errors of
tasks on fsspec's event loop). A filter applies to the records made on its own logger
only, not to those of its children: each is named."""

_SECRET_PARAMETERS = (
    # S3 (SigV4, SigV2), GCS (V4, V2), Azure SAS, storage connection strings
    "x-amz-signature|x-amz-credential|x-amz-security-token|signature|awsaccesskeyid"
    "|x-goog-signature|x-goog-credential|googleaccessid|sig|accountkey"
    "|sharedaccesssignature|credential"
    # OAuth and API keys
    "|access_token|refresh_token|id_token|token|api_key|apikey|key|client_secret|password"
)
_QUERY = re.compile(
    # a parameter: after ? & ; (or their percent-encoded forms), whitespace or a comma
    r"(?i)((?:^|[?&;,\s]|%3F|%26)(?:" + _SECRET_PARAMETERS + r")(?:=|%3D))"
    # its value: up to the next parameter (& ;), a quote, a bracket or whitespace
    r"(?:(?!%26)[^&;\s#'\"<>\\)\]},|])+"
)
_SECRET_NAMES = (
    "key|secret|token|sas_token|account_key|credential|credentials|connection_string"
    "|password|client_secret|session_token|access_token|refresh_token|api_key"
    "|aws_access_key_id|aws_secret_access_key|aws_session_token"
)
_QUOTED = re.compile(
    # 'secret': '...' in a dict's repr, secret='...' in keyword arguments (names as
    # written: ``'Key'`` of an S3 call is the object's name, not a credential)
    r"(\b(?:" + _SECRET_NAMES + r")(['\"]?)\s*[:=]\s*)(['\"])(?:(?!\3)[^\\]|\\.)*\3"
)
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/?#@\s'\"<>]+@")
_BEARER = re.compile(r"(\b[Bb]earer\s+)[A-Za-z0-9._~+/=-]{8,}")  # a token, not prose


def redact_url(text: str) -> str:
    """``text`` (a URL, or any text holding some) with its secrets replaced by ``REDACTED``.

    Parameters
    ----------
    text : str
        A URL, a log message, an exception's message or a ``repr``.

    Returns
    -------
    str
        The same text, where the values of signing and token query parameters
        (``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``,
        ``Signature``, ``AWSAccessKeyId``, ``X-Goog-Signature``, ``X-Goog-Credential``,
        ``GoogleAccessId``, Azure's ``sig``, ``access_token``, ``token``...), the user
        info of URLs, ``Bearer`` tokens and quoted credentials (``'secret': '...'``)
        read ``REDACTED``. Hosts, paths and the other parameters (``X-Amz-Expires``,
        Azure's ``se``, ``sp``, ``sv``...) are kept: they name the object and say
        when the URL expires.

    Examples
    --------
    >>> redact_url("https://b.s3.amazonaws.com/x.dcm?AWSAccessKeyId=AKIA1&Signature=s%3D")
    'https://b.s3.amazonaws.com/x.dcm?AWSAccessKeyId=REDACTED&Signature=REDACTED'
    """
    text = _QUOTED.sub(lambda m: _replaced(m, f"{m.group(3)}{REDACTED}{m.group(3)}"), text)
    text = _QUERY.sub(lambda m: _replaced(m, REDACTED), text)
    if "@" in text:
        text = _USERINFO.sub(lambda m: _replaced(m, REDACTED + "@"), text)
    return _BEARER.sub(lambda m: _replaced(m, REDACTED), text)


def _replaced(match: re.Match[str], value: str) -> str:
    """The match with its value (all but group 1) replaced; a value redacted before is
    kept as it is, so that redacting twice changes nothing (:func:`leaks` relies on it)."""
    head = match.group(1)
    if match.group(0)[len(head) :].lstrip("'\"").startswith(REDACTED):
        return match.group(0)
    return head + value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the records of its logger; it never drops one.

    A record whose message (``msg % args``) holds a secret gets the redacted message
    as ``msg`` and no ``args``; an exception attached to a record (``exc_info``)
    whose traceback holds one is replaced by its redacted text (``exc_text``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it.

        Parameters
        ----------
        record : logging.LogRecord
            A record made on the filter's logger.

        Returns
        -------
        bool
            Always True: the record is logged, redacted.
        """
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself
            return True
        clean = redact_url(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            clean = redact_url(text)
            if clean != text:  # formatters print ``exc_text`` when there is no exc_info
                record.exc_info, record.exc_text = None, clean
        elif record.exc_text:
            record.exc_text = redact_url(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_url(record.stack_info)
        return True


_install_lock = threading.Lock()


def install(names: tuple[str, ...] = LOGGERS) -> None:
    """Add a :class:`RedactingFilter` to each logger of ``names`` that has none.

    Idempotent and thread-safe. Levels, handlers and propagation stay as they are.
    """
    with _install_lock:
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactingFilter) for f in logger.filters):
                logger.addFilter(RedactingFilter())


# -- exceptions ---------------------------------------------------------------------------
_MAX_CHAIN = 16


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or while handling."""
    seen: list[BaseException] = []
    todo = [error]
    while todo and len(seen) < _MAX_CHAIN:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend(c for c in (e.__cause__, e.__context__) if c is not None)
    return seen


def _dirty(error: BaseException) -> bool:
    texts = [str(error), repr(error), *map(str, getattr(error, "__notes__", ()))]
    return any(redact_url(t) != t for t in texts)


def leaks(error: BaseException) -> bool:
    """Whether the message, ``repr`` or notes of ``error`` or of its chain hold a secret."""
    return any(_dirty(e) for e in _chain(error))


def scrub(error: BaseException) -> BaseException:
    """``error`` itself, or, where it or its chain holds a secret, a redacted copy.

    The copy has the same type, arguments and attributes where the exception can be
    rebuilt as pickling would (``FileNotFoundError(url)``, our
    :class:`~hdfsspec.errors.DicomFormatError` with its ``path``...), aiohttp's
    ``ClientResponseError`` keeps its status; an exception that cannot be rebuilt
    clean becomes an ``OSError`` with the redacted message. The copy carries the
    original's traceback and redacted copies of its cause and context. Raise it
    outside of an ``except`` block: raised inside one it would chain the original.
    """
    return _scrub(error, 0)


def _scrub(error: BaseException, depth: int) -> BaseException:
    if depth >= _MAX_CHAIN or not leaks(error):
        return error
    # a clean exception whose chain leaks keeps its identity: only its links are replaced
    clean = _rebuilt(error) if _dirty(error) else error
    for attribute in ("__cause__", "__context__"):
        linked = getattr(error, attribute)
        setattr(clean, attribute, None if linked is None else _scrub(linked, depth + 1))
    if clean is error:
        return error
    clean.__suppress_context__ = error.__suppress_context__
    notes = getattr(error, "__notes__", None)
    if notes:
        vars(clean)["__notes__"] = [redact_url(str(n)) for n in notes]  # add_note: 3.11+
    return clean.with_traceback(error.__traceback__)


def _rebuilt(error: BaseException) -> BaseException:
    """A copy of ``error`` with its strings redacted (its type kept where it can be)."""
    made: BaseException | None = None
    try:
        if is_instance(error, "aiohttp", "ClientResponseError"):
            made = _response_error(error)
        else:
            made = _reduced(error)
    except Exception:  # an exception that cannot be rebuilt: made below
        made = None
    if made is None or _dirty(made):
        message = redact_url(str(error))
        made = OSError(f"{type(error).__name__}: {message}" if message else type(error).__name__)
    return made


def _reduced(error: BaseException) -> BaseException | None:
    """``error`` rebuilt the way pickle would, from its redacted ``__reduce__`` values."""
    reduced = error.__reduce__()
    if not isinstance(reduced, tuple) or len(reduced) < 2:
        return None
    rebuild, args, *rest = reduced
    made = rebuild(*_clean(args))
    if not isinstance(made, BaseException):
        return None
    state = rest[0] if rest else None
    if isinstance(state, dict):
        made.__dict__.update(_clean(state))
    return made


def _clean(value: Any) -> Any:
    """``value`` with its strings (in tuples, lists and dicts too) redacted."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, tuple | list):
        return type(value)(_clean(v) for v in value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if is_instance(value, "yarl", "URL"):
        return type(value)(redact_url(str(value)), encoded=True)
    return value


def _response_error(error: Any) -> BaseException:
    """aiohttp's ``ClientResponseError`` (its message names the URL) with the URL redacted;
    its request headers and redirect history are left out."""
    from aiohttp import ClientResponseError, RequestInfo
    from multidict import CIMultiDict, CIMultiDictProxy

    info = error.request_info
    clean = RequestInfo(
        _clean(info.url), info.method, CIMultiDictProxy(CIMultiDict()), _clean(info.real_url)
    )
    return ClientResponseError(
        clean,
        (),
        status=error.status,
        message=redact_url(str(error.message)),
        headers=error.headers,
    )

"""The ``hdfsspec`` logger hierarchy: one logger a module, under ``hdfsspec``.

Each module logs to ``get_logger(__name__)`` (``hdfsspec.cache.walk``,
``hdfsspec.io.retry``...), a child of the package logger ``hdfsspec``, which holds a
:class:`logging.NullHandler`: nothing is printed unless the application configures
logging (the command line's ``-v`` does, see :func:`to_stream`).

Levels
------
DEBUG
    Fetch plans (frames, ranges, bytes), request rounds (ranges, bytes), fallbacks
    (no offset table, no usable TIFF tile table, a signed URL refused) and retries.
INFO
    Scans of Pixel Data without offset table (start and end: frames, requests, bytes).

Rules for the callers: a URL or a path is passed through
:func:`hdfsspec.io.redact.redact_url` before it is logged (a presigned URL is a
credential; this base module cannot import it: the callers do), never a storage
option; messages use lazy %-formatting, and arguments that cost something to compute
are computed under ``logger.isEnabledFor(level)``: with DEBUG off, a log call costs a
level check.
"""

from __future__ import annotations

import logging
from typing import IO

__all__ = ["ROOT", "get_logger", "to_stream"]

ROOT = "hdfsspec"
"""Name of the package logger."""

FORMAT = "%(relativeCreated)7.0f ms %(levelname)-5s %(name)s: %(message)s"
"""Format of the records :func:`to_stream` writes."""

_package = logging.getLogger(ROOT)
if not any(isinstance(h, logging.NullHandler) for h in _package.handlers):
    _package.addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``__name__``), a child of ``hdfsspec``.

    Parameters
    ----------
    name : str
        ``hdfsspec`` or a dotted name below it.

    Returns
    -------
    logging.Logger

    Raises
    ------
    ValueError
        For a name outside the ``hdfsspec`` hierarchy (its records would escape the
        package logger's handlers and level).
    """
    if name != ROOT and not name.startswith(ROOT + "."):
        raise ValueError(f"{name!r} is not a logger of the {ROOT!r} hierarchy")
    return logging.getLogger(name)


def to_stream(
    stream: IO[str], level: int, filters: tuple[logging.Filter, ...] = ()
) -> logging.Handler:
    """Write the records of ``hdfsspec`` at ``level`` and above to ``stream``.

    The package logger's level is set to ``level``; remove the handler returned (and
    set the level back) to undo it.

    Parameters
    ----------
    stream : file
        Where the records go (``sys.stderr`` for the command line).
    level : int
        ``logging.INFO``, ``logging.DEBUG``...
    filters : tuple of logging.Filter
        Added to the handler: they see every record of the hierarchy (a filter on
        a logger sees only that logger's own records).

    Returns
    -------
    logging.Handler
        The handler added to the package logger.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(level)
    for f in filters:
        handler.addFilter(f)
    _package.addHandler(handler)
    _package.setLevel(level)
    return handler

"""What the command line says: storage options, numbers, frame lists, and its two errors.

Storage options are given one at a time, ``-s KEY=VALUE`` (repeated), and go to the
filesystem of the URL's protocol (s3fs for ``s3://``, gcsfs for ``gs://``...), as
``storage_options={"s3": {...}}`` does in Python. A VALUE that reads as JSON is
taken as such (``anon=true``, ``default_block_size=1048576``, ``headers={"a": "b"}``);
anything else is a string (``profile=dev``, ``endpoint_url=http://127.0.0.1:9000``).
A dotted KEY sets a nested value (``config_kwargs.max_pool_connections=50``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from fsspec.core import split_protocol

__all__ = [
    "CommandError",
    "UsageError",
    "frame_list",
    "int_between",
    "key_value",
    "positive_int",
    "source_options",
    "storage_options",
    "target_protocol",
    "whole_number",
]


class UsageError(Exception):
    """Arguments that cannot be right for the object (a region outside the image...):
    one line on stderr, exit status 2, as argparse's own errors."""


class CommandError(Exception):
    """A command that cannot do its work (the index store is off...): one line on
    stderr, exit status 1."""


def whole_number(text: str) -> int:
    """An integer of 0 or more (argparse type)."""
    return _bounded(text, 0)


def positive_int(text: str) -> int:
    """An integer of 1 or more (argparse type)."""
    return _bounded(text, 1)


def int_between(low: int, high: int) -> Any:
    """An argparse type: an integer from ``low`` to ``high`` inclusive."""

    def parse(text: str) -> int:
        return _bounded(text, low, high)

    parse.__name__ = f"integer from {low} to {high}"
    return parse


def _bounded(text: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise argparse.ArgumentTypeError(f"{value} is out of range: give an integer {span}")
    return value


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as ``(key, value)``, the value read as JSON if it parses (argparse type)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (e.g. anon=true, endpoint_url=http://127.0.0.1:9000)"
        )
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def add_storage_options(parser: argparse.ArgumentParser, help: str) -> None:
    """``-s/--storage-option KEY=VALUE`` (repeatable, into ``options``) on ``parser``."""
    parser.add_argument(
        "-s",
        "--storage-option",
        dest="options",
        metavar="KEY=VALUE",
        type=key_value,
        action="append",
        default=[],
        help=help,
    )


def frame_list(text: str) -> list[int]:
    """A frame number (from 1, as DICOM counts them) or a range ``A-B`` (argparse type)."""
    first, sep, last = text.partition("-")
    try:
        a = int(first)
        b = int(last) if sep else a
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a frame number or a range of them (e.g. 7 or 1-16)"
        ) from None
    if a < 1 or b < a:
        raise argparse.ArgumentTypeError(
            f"{text!r}: frames are numbered from 1, and a range A-B needs A <= B"
        )
    return list(range(a, b + 1))


def target_protocol(url: str) -> str:
    """The protocol whose filesystem reads ``url`` (the last of a chain; ``file`` for a path)."""
    last = url.split("::")[-1]
    protocol, _ = split_protocol(last)
    return protocol or "file"


def storage_options(
    url: str, pairs: Sequence[tuple[str, Any]], dicom: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``storage_options`` of :func:`hdfsspec.imread` for ``url``.

    Parameters
    ----------
    url : str
        The object's URL or path.
    pairs : sequence of (str, object)
        The ``-s KEY=VALUE`` options, for the URL's filesystem (dotted keys nest).
    dicom : dict, optional
        Options of the ``dicom`` layer (top-level keys).

    Returns
    -------
    dict
        ``{protocol: {...}, **dicom}``.
    """
    target: dict[str, Any] = {}
    for key, value in pairs:
        *parents, leaf = key.split(".")
        node = target
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"-s {key}=...: {part!r} was given a value already")
            node = child
        node[leaf] = value
    out = dict(dicom or {})
    if target:
        out[target_protocol(url)] = target
    return out


_OFF = {"off", "false", "no", "none", "0"}


def source_options(args: argparse.Namespace, **dicom: Any) -> dict[str, Any]:
    """The ``storage_options`` of the object a command names (``url``, ``-s``,
    ``--index-cache``), with ``dicom`` options of the ``dicom`` layer."""
    cache = getattr(args, "index_cache", None)
    if cache is not None:
        dicom["index_cache"] = False if cache.strip().lower() in _OFF else cache
    return storage_options(args.url, args.options, dicom)

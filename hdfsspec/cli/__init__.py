"""The ``hdfsspec`` command line: DICOM objects in object storage without writing code.

``hdfsspec info URL``
    What the object is (SOP class, transfer syntax, frames, tiling, offset table,
    header size) and what reading a region or every frame would cost.
``hdfsspec region URL --x X --y Y --width W --height H -o out.png``
    A region of an image, decoded, as PNG (only the tiles it covers are fetched).
``hdfsspec frames URL 1 2 10-20 -o DIR``
    Frames as files: encoded as stored (``.jpg``, ``.j2k``, ``.raw``...) or decoded
    to PNG (``--decode``).
``hdfsspec index URL``
    Build the frame index once and keep it in the index store.
``hdfsspec demo``
    Requests and bytes of a region read with and without hdfsspec.

One module a subcommand (``add_parser`` and ``run``); :mod:`hdfsspec.cli.app` holds the
parser and :func:`main`, the ``hdfsspec`` script (also ``python -m hdfsspec``).
"""

from __future__ import annotations

from hdfsspec.cli.app import build_parser, main
from hdfsspec.cli.demo import demo, demo_url, middle_region

__all__ = ["build_parser", "demo", "demo_url", "main", "middle_region"]

"""How the commands say things: sizes, UIDs, request counts, file extensions."""

from __future__ import annotations

import re
from typing import Any

from pydicom.uid import UID

__all__ = ["EXTENSIONS", "count", "extension", "fetched", "plain", "plural", "uid_name"]

EXTENSIONS = {
    "1.2.840.10008.1.2.4.50": ".jpg",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": ".jpg",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57": ".jpg",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70": ".jpg",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.80": ".jls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": ".jls",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": ".j2k",  # JPEG 2000 Lossless (a codestream)
    "1.2.840.10008.1.2.4.91": ".j2k",  # JPEG 2000
    "1.2.840.10008.1.2.4.92": ".j2k",  # JPEG 2000 Part 2 Multi-component Lossless
    "1.2.840.10008.1.2.4.93": ".j2k",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201": ".jhc",  # High-Throughput JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.202": ".jhc",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": ".jhc",  # HTJ2K
    "1.2.840.10008.1.2.4.110": ".jxl",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111": ".jxl",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112": ".jxl",  # JPEG XL
    "1.2.840.10008.1.2.4.100": ".mpg",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101": ".mpg",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102": ".mp4",  # MPEG-4 AVC/H.264
    "1.2.840.10008.1.2.4.103": ".mp4",
    "1.2.840.10008.1.2.4.104": ".mp4",
    "1.2.840.10008.1.2.4.105": ".mp4",
    "1.2.840.10008.1.2.4.106": ".mp4",
    "1.2.840.10008.1.2.4.107": ".hevc",  # HEVC/H.265
    "1.2.840.10008.1.2.4.108": ".hevc",
    "1.2.840.10008.1.2.5": ".rle",  # RLE Lossless
    "1.2.840.10008.1.2.8.1": ".zz",  # Deflated Image Frame Compression (zlib)
    "1.2.840.10008.1.2": ".raw",  # Implicit VR Little Endian: native pixels
    "1.2.840.10008.1.2.1": ".raw",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ".raw",  # Explicit VR Big Endian
}
"""File extension of an encoded frame, by transfer syntax."""


def extension(transfer_syntax: str) -> str:
    """The extension of a frame of ``transfer_syntax`` (``.bin`` when unknown)."""
    return EXTENSIONS.get(str(transfer_syntax), ".bin")


def uid_name(uid: object) -> str:
    """``Name (uid)``, or the UID alone when pydicom does not know it."""
    if not uid:
        return "-"
    name = UID(str(uid)).name
    return f"{name} ({uid})" if name and name != str(uid) else str(uid)


def count(n: int) -> str:
    """``1,234,567``."""
    return f"{n:,}"


def plural(n: int, word: str) -> str:
    """``1 request``, ``2 requests``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def fetched(stats: dict[str, Any]) -> str:
    """The requests and bytes of a file's ``stats.as_dict()``, per phase that made some."""
    phases = [
        f"{name} {plural(p['requests'], 'request')} / {count(p['bytes'])} B"
        for name in ("header", "index", "frames", "other")
        if (p := stats.get(name)) and p["requests"]
    ]
    head = f"{plural(stats['requests'], 'request')}, {count(stats['bytes'])} bytes"
    if stats.get("rounds") is not None:  # None: several files' rounds, which overlap
        head += f" in {plural(stats['rounds'], 'round trip')}"
    return head + (f" ({'; '.join(phases)})" if phases else "")


def plain(doc: str | None) -> str:
    """A docstring as plain text for ``--help``: no reST roles or literal markup."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "")

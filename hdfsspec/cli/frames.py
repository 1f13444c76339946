"""``hdfsspec frames URL 1 2 10-20 -o DIR``: frames written as files.

Frames are counted from 1, as DICOM does. Each is written as it is stored, with the
extension of its transfer syntax (``.jpg``, ``.jls``, ``.j2k``, ``.jhc``, ``.jxl``,
``.rle``, ``.raw`` for native pixels, ``.bin`` when unknown), fetched in concurrent
rounds of several frames; or, with ``--decode``, decoded by highdicom and written as
PNG (see :mod:`hdfsspec.cli.pixels`). Files are named ``frame-<number>`` in ``DIR``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import IO, Any

from hdfsspec.cli.options import UsageError, frame_list, source_options
from hdfsspec.cli.pixels import decode_options, write_png
from hdfsspec.cli.report import extension, fetched, plain, plural
from hdfsspec.dicom.parse import number_of_frames
from hdfsspec.sources import open_dicom

__all__ = ["DECODED_BATCH", "add_parser", "frame_name", "run"]

DECODED_BATCH = 64
"""Frames decoded at a time with ``--decode`` (each batch is one fetch)."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser], **kwargs: Any) -> None:
    """Add the ``frames`` subcommand to ``sub``."""
    parser = sub.add_parser(
        "frames",
        parents=parents,
        help="write frames as files: encoded as stored, or decoded to PNG",
        description=plain(__doc__),
        **kwargs,
    )
    parser.add_argument(
        "frames",
        nargs="*",
        type=frame_list,
        metavar="FRAME",
        help="frame numbers from 1, or ranges A-B",
    )
    parser.add_argument("--all", action="store_true", help="every frame of the object")
    parser.add_argument("-o", "--output", default=".", metavar="DIR", help="directory to write")
    parser.add_argument("--decode", action="store_true", help="decode the frames to PNG")
    parser.set_defaults(run=run)


def frame_name(number: int, total: int, suffix: str) -> str:
    """``frame-007.jpg``: the number padded to the digits of ``total``."""
    return f"frame-{number:0{len(str(total))}d}{suffix}"


def _chosen(args: argparse.Namespace, total: int) -> list[int]:
    """The frame numbers asked for (from 1), in order, each once."""
    if args.all == bool(args.frames):
        raise UsageError("give frame numbers or --all (one of the two)")
    numbers = range(1, total + 1) if args.all else [n for group in args.frames for n in group]
    chosen = list(dict.fromkeys(numbers))
    beyond = [n for n in chosen if n > total]
    if beyond:
        raise UsageError(f"frame {beyond[0]}: the object has {plural(total, 'frame')}")
    return chosen


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Write the frames of ``args``."""
    os.makedirs(args.output, exist_ok=True)
    storage_options = source_options(args)
    with open_dicom(args.url, storage_options) as f:
        parsed = f.header
        total = number_of_frames(parsed) if parsed.header.pixel_data_offset else 0
        if not total:
            raise UsageError("the object has no frames (no Pixel Data)")
        chosen = _chosen(args, total)
        if args.decode:
            written = _decoded(f, chosen, total, args.output)
        else:
            suffix = extension(parsed.header.transfer_syntax_uid)
            written = _encoded(f.iter_frames(n - 1 for n in chosen), total, suffix, args.output)
    stats = f.stats.as_dict()  # after the close, which may check the object's version
    out.write(f"wrote {plural(written, 'frame')} to {args.output}\n")
    out.write(f"fetched: {fetched(stats)}\n")
    return 0


def _encoded(frames: Iterator[tuple[int, bytes]], total: int, suffix: str, folder: str) -> int:
    written = 0
    for index, data in frames:
        with open(os.path.join(folder, frame_name(index + 1, total, suffix)), "wb") as dest:
            dest.write(data)
        written += 1
    return written


def _decoded(f: Any, chosen: list[int], total: int, folder: str) -> int:
    """Decode with highdicom, a batch of frames (one fetch) at a time; the image reads
    through ``f`` and closes it."""
    from hdfsspec.highdicom.readers import imread

    im = imread(f)
    options = decode_options(im)
    for k in range(0, len(chosen), DECODED_BATCH):
        batch = chosen[k : k + DECODED_BATCH]
        pixels = im.get_frames(batch, **options)
        for number, frame in zip(batch, pixels, strict=True):
            write_png(frame, os.path.join(folder, frame_name(number, total, ".png")))
    return len(chosen)

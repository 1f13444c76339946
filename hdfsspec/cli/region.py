"""``hdfsspec region URL -o out.png``: a region of an image, decoded, as PNG.

The region is given in pixels of the image, counted from 0 at the top left as image
tools do (``--x`` the column, ``--y`` the row; highdicom's ``column_start`` is
``x + 1``). On a tiled image (a whole-slide image) it is a region of the total pixel
matrix and only the tiles it covers are fetched; on an image that is not tiled it is
cut from one frame (``--frame``, counted from 1). Values are the stored ones after
the colour steps highdicom applies (see :mod:`hdfsspec.cli.pixels`).

With ``--level``, the URL names a whole slide (a prefix holding its instances, a glob)
read with :func:`hdfsspec.open_slide`: ``--x`` and ``--y`` are then in pixels of level
0, as OpenSlide takes them, and ``--width`` and ``--height`` in pixels of the level.
"""

from __future__ import annotations

import argparse
import math
from typing import IO, Any

import numpy as np

from hdfsspec.cli.options import UsageError, positive_int, source_options, whole_number
from hdfsspec.cli.pixels import decode_options, write_png
from hdfsspec.cli.report import fetched, plain, plural

__all__ = ["add_parser", "read_region", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser], **kwargs: Any) -> None:
    """Add the ``region`` subcommand to ``sub``."""
    parser = sub.add_parser(
        "region",
        parents=parents,
        help="decode a region of an image to PNG, fetching only the tiles it covers",
        description=plain(__doc__),
        **kwargs,
    )
    parser.add_argument("--x", type=whole_number, default=0, help="first column, from 0")
    parser.add_argument("--y", type=whole_number, default=0, help="first row, from 0")
    parser.add_argument("--width", type=positive_int, default=512, help="columns")
    parser.add_argument("--height", type=positive_int, default=512, help="rows")
    parser.add_argument(
        "--level",
        type=whole_number,
        help="pyramid level of a slide (0 the finest): the URL is then the slide's prefix "
        "or glob, and --x, --y are in level-0 pixels",
    )
    parser.add_argument(
        "--frame",
        type=positive_int,
        default=1,
        help="frame of an image that is not tiled, from 1",
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE.png", help="PNG to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Read the region of ``args`` and write it to ``args.output``."""
    if args.level is None:
        pixels, where, stats = _from_instance(args)
    else:
        pixels, where, stats = _from_slide(args)
    mode = write_png(pixels, args.output)
    height, width = pixels.shape[:2]
    out.write(f"wrote {args.output}: {width:,} x {height:,} px, {mode}; {where}\n")
    if stats is not None:
        slide = args.level is not None
        listing = "; not counted: the listing of the slide's instances" if slide else ""
        out.write(f"fetched: {fetched(stats)}{listing}\n")
    return 0


Read = tuple[np.ndarray, str, "dict[str, Any] | None"]
"""The pixels, where they come from, and the requests made (``stats.as_dict()``)."""


def _from_instance(args: argparse.Namespace) -> Read:
    from hdfsspec.highdicom.readers import imread

    with imread(args.url, source_options(args)) as im:
        pixels, where = read_region(im, args.x, args.y, args.width, args.height, args.frame)
        file = im.file  # None where highdicom read the object whole
    # counted after the close, which may check the object's version
    return pixels, where, file.stats.as_dict() if file is not None else None


def _from_slide(args: argparse.Namespace) -> Read:
    from hdfsspec.slide import open_slide

    with open_slide(args.url, source_options(args)) as slide:
        level = args.level
        if level >= slide.level_count:
            raise UsageError(
                f"--level {level}: the slide has {plural(slide.level_count, 'level')}"
            )
        downsample = slide.level_downsamples[level]
        columns, rows = slide.level_dimensions[level]
        lx, ly = math.floor(args.x / downsample), math.floor(args.y / downsample)
        _inside(lx, ly, args.width, args.height, rows, columns, f"level {level}")
        options = decode_options(slide.levels[level])
        size = (args.width, args.height)
        pixels = slide.read_region((args.x, args.y), level, size, as_array=True, **options)
        files = [im.file for im in (*slide.levels, *slide.associated.values())]
    stats = _total([f.stats.as_dict() for f in files if f is not None])  # after the close
    where = f"x {lx}-{lx + args.width - 1}, y {ly}-{ly + args.height - 1} of level {level}"
    return pixels, f"{where} ({columns:,} x {rows:,}, downsample {downsample:g})", stats


def _total(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several files' ``stats.as_dict()`` (their counts, phase by phase)."""
    total: dict[str, Any] = {"requests": 0, "bytes": 0, "rounds": None}  # rounds overlap
    for one in stats:
        for key, value in one.items():
            if isinstance(value, dict):
                phase = total.setdefault(key, {"requests": 0, "bytes": 0})
                phase["requests"] += value["requests"]
                phase["bytes"] += value["bytes"]
            elif key in ("requests", "bytes"):
                total[key] += value
    return total


def read_region(
    im: Any, x: int, y: int, width: int, height: int, frame: int = 1
) -> tuple[np.ndarray, str]:
    """The pixels of the region, and where they come from (for the report).

    Raises
    ------
    UsageError
        When the region goes beyond the image (or the frame beyond the frames).
    """
    options = decode_options(im)
    if im.is_tiled:
        rows, columns = int(im.TotalPixelMatrixRows), int(im.TotalPixelMatrixColumns)
        _inside(x, y, width, height, rows, columns, "the total pixel matrix")
        pixels = im.get_total_pixel_matrix(
            row_start=y + 1,
            row_end=y + height + 1,
            column_start=x + 1,
            column_end=x + width + 1,
            **options,
        )
        return pixels, f"x {x}-{x + width - 1}, y {y}-{y + height - 1} of {columns:,} x {rows:,}"
    frames = int(getattr(im, "NumberOfFrames", 1) or 1)
    if frame > frames:
        raise UsageError(f"--frame {frame}: the image has {plural(frames, 'frame')}")
    rows, columns = int(im.Rows), int(im.Columns)
    _inside(x, y, width, height, rows, columns, f"frame {frame}")
    pixels = im.get_frame(frame, **options)[y : y + height, x : x + width]
    return pixels, f"x {x}-{x + width - 1}, y {y}-{y + height - 1} of frame {frame}"


def _inside(x: int, y: int, width: int, height: int, rows: int, columns: int, what: str) -> None:
    if x + width > columns or y + height > rows:
        raise UsageError(
            f"the region x {x}-{x + width - 1}, y {y}-{y + height - 1} goes beyond {what} "
            f"({columns:,} columns x {rows:,} rows; x and y count from 0)"
        )

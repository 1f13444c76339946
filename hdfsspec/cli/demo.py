"""``hdfsspec demo``: read a region of a slide with and without hdfsspec, and compare.

By default the demo builds a tiled whole-slide image (JPEG tiles, with a Basic Offset
Table and without any offset table), serves it from a loopback HTTP server that counts
every request and byte, and reads the same 512 x 512 region through ``dicom::http://...``
and through highdicom over a plain fsspec HTTP file. No cloud account, no network
beyond 127.0.0.1. With ``--url`` it reads the middle of one's own tiled image instead,
each method's requests counted by the client (hdfsspec's ``stats``; a counting wrapper
of the target filesystem for the others).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import IO, Any

import numpy as np

from hdfsspec.cli.options import (
    UsageError,
    add_storage_options,
    int_between,
    storage_options,
    target_protocol,
)
from hdfsspec.cli.report import plain

__all__ = ["add_parser", "demo", "demo_url", "middle_region", "run"]

Read = Callable[[str], tuple[np.ndarray, int, int]]
"""Read the region of a URL: ``(pixels, requests, bytes)``."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser], **kwargs: Any) -> None:
    """Add the ``demo`` subcommand to ``sub``."""
    parser = sub.add_parser(
        "demo",
        parents=parents,
        help="read a region with and without hdfsspec and compare requests and bytes",
        description=plain(__doc__),
        **kwargs,
    )
    parser.add_argument(
        "--size", type=int_between(256, 32768), default=8192, help="sample slide side, pixels"
    )
    parser.add_argument(
        "--tile", type=int_between(16, 2048), default=256, help="sample slide tile side, pixels"
    )
    parser.add_argument("--url", help="read one's own tiled image instead of the sample slide")
    add_storage_options(
        parser, "an option of the --url's filesystem, repeatable (see 'hdfsspec info --help')"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Run the demo of ``args``."""
    if args.url is not None:
        return demo_url(args.url, storage_options(args.url, args.options), out)
    if args.options:
        raise UsageError("-s applies to --url")
    if args.tile > args.size:
        raise UsageError(f"--tile {args.tile} is larger than the slide (--size {args.size})")
    return demo(args.size, args.tile, out)


def middle_region(rows: int, columns: int | None = None) -> dict[str, Any]:
    """A 512 x 512 region near the middle of a ``rows`` x ``columns`` image, not tile
    aligned, as highdicom counts rows and columns (from 1, the end excluded); the whole
    image where it is smaller."""
    columns = rows if columns is None else columns
    r, c = max(0, rows // 2 - 196), max(0, columns // 2 - 396)
    r, c = min(r, max(0, rows - 512)), min(c, max(0, columns - 512))
    return {
        "row_start": r + 1,
        "row_end": min(rows, r + 512) + 1,
        "column_start": c + 1,
        "column_end": min(columns, c + 512) + 1,
    }


def _hdfsspec(url: str, window: dict[str, Any], options: dict[str, Any]) -> Any:
    import hdfsspec

    # a cold open, every run
    with hdfsspec.imread(url, {"index_cache": False, **options}) as im:
        pixels = im.get_total_pixel_matrix(**window)
        file = im.file
    stats = file.stats if file is not None else None  # after the close
    return pixels, (stats.requests if stats else 0), (stats.bytes if stats else 0)


def _plain(url: str, window: dict[str, Any], block_size: int | None, target: Any = None) -> Any:
    """highdicom over a plain fsspec file (through a counting wrapper of ``target``)."""
    import fsspec
    import highdicom as hd

    options = {} if block_size is None else {"block_size": block_size}
    if target is None:
        with fsspec.open(url, "rb", **options) as f:
            pixels = hd.imread(f, lazy_frame_retrieval=True).get_total_pixel_matrix(**window)
        return pixels, 0, 0
    from hdfsspec.testing import CountingFileSystem

    fs, path = target
    counting = CountingFileSystem(fs=fs, skip_instance_cache=True)
    with counting.open(path, "rb", **options) as f:
        pixels = hd.imread(f, lazy_frame_retrieval=True).get_total_pixel_matrix(**window)
    return pixels, counting.requests, counting.bytes


def demo(size: int = 8192, tile: int = 256, out: Any = None) -> int:
    """Run the demo on a sample slide; return 0 when every method read the same pixels.

    It prints to ``out`` (by default ``sys.stdout`` at the time of the call).
    """
    out = sys.stdout if out is None else out
    from hdfsspec.testing import RangeHTTPServer, build_slide, jpeg_tiles

    tiles = jpeg_tiles(8, tile, 3, quality=80)
    slides = {
        "with BOT": build_slide(size, size, tile=tile, tiles=tiles, offset_table="bot"),
        "no offset table": build_slide(size, size, tile=tile, tiles=tiles, offset_table="empty"),
    }
    window = middle_region(size)
    methods = _methods(window, {}, None, "http")
    print(
        f"Sample slide: {size} x {size} px, {(-(-size // tile)) ** 2} JPEG tiles of {tile} px; "
        f"region {window}",
        file=out,
    )
    _header(out)
    ok = True
    names = {k.replace(" ", "_") + ".dcm": v for k, v in slides.items()}
    with RangeHTTPServer(names) as server:
        for _, read in methods:  # unmeasured: imports, decoders, highdicom's tables
            read(server.url(next(iter(names))))
        for layout, name in zip(slides, names, strict=True):
            ok &= _compare(out, layout, methods, server.url(name), server)
            print(
                f"{'':<16} {'(object size)':<48} {'':>8} {len(slides[layout]) / 1e6:>8.2f}",
                file=out,
            )
    print("same pixels from every method: " + ("yes" if ok else "NO"), file=out)
    return 0 if ok else 1


def demo_url(url: str, options: dict[str, Any], out: Any = None) -> int:
    """Run the demo on one's own tiled image at ``url``; 0 when the pixels are the same."""
    import fsspec

    import hdfsspec

    out = sys.stdout if out is None else out
    with hdfsspec.imread(url, {"index_cache": False, **options}) as im:
        if not im.is_tiled:
            raise UsageError("demo --url reads a region of a tiled image (a whole-slide image)")
        rows, columns = int(im.TotalPixelMatrixRows), int(im.TotalPixelMatrixColumns)
    window = middle_region(rows, columns)
    target_options: dict[str, Any] = options.get(target_protocol(url), {})
    fs, path = fsspec.core.url_to_fs(url, **target_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    print(f"{url}: {columns:,} x {rows:,} px; region {window}", file=out)
    _header(out)
    ok = _compare(out, "your object", _methods(window, options, (fs, path), protocol), url, None)
    print("same pixels from every method: " + ("yes" if ok else "NO"), file=out)
    return 0 if ok else 1


def _methods(
    window: dict[str, Any], options: dict[str, Any], target: Any, protocol: str
) -> list[tuple[str, Read]]:
    block = _default_block(target[0]) if target is not None else None
    default = f"default {(block or 5 * 2**20) / 2**20:g} MiB blocks"
    return [
        ("hdfsspec.imread (dicom::)", partial(_hdfsspec, window=window, options=options)),
        (
            f"highdicom + fsspec {protocol} ({default})",
            partial(_plain, window=window, block_size=block, target=target),
        ),
        (
            f"highdicom + fsspec {protocol} (500 kB blocks)",
            partial(_plain, window=window, block_size=500_000, target=target),
        ),
    ]


def _default_block(fs: Any) -> int | None:
    """The block size files of ``fs`` have by default (s3fs: 50 MiB; others: 5 MiB)."""
    for name in ("default_block_size", "block_size"):
        value = getattr(fs, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _header(out: IO[str]) -> None:
    print(f"{'layout':<16} {'method':<48} {'requests':>8} {'MB':>8} {'seconds':>8}", file=out)


def _compare(
    out: IO[str], layout: str, methods: list[tuple[str, Read]], url: str, server: Any
) -> bool:
    """Read the region of ``url`` with each method; print a row each; whether the pixels
    are the same (the loopback ``server``'s log counts, where there is one)."""
    reference, ok = None, True
    for label, read in methods:
        if server is not None:
            server.log.clear()
        began = time.perf_counter()
        pixels, requests, nbytes = read(url)
        seconds = time.perf_counter() - began
        if server is not None:
            requests, nbytes = server.log.requests, server.log.bytes
        if reference is None:
            reference = pixels
        ok &= bool(np.array_equal(pixels, reference))
        print(
            f"{layout:<16} {label:<48} {requests:>8} {nbytes / 1e6:>8.2f} {seconds:>8.2f}",
            file=out,
        )
    return ok

"""``hdfsspec demo``: read a region of a sample slide over HTTP, with and without hdfsspec.

The demo builds a tiled whole-slide image (JPEG tiles, with a Basic Offset
Table and without any offset table), serves it from a loopback HTTP server that
counts every request and byte, and reads the same 512 x 512 region through
``dicom::http://...`` and through highdicom over a plain fsspec HTTP file.
No cloud account, no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

__all__ = ["main"]


def middle_region(size: int) -> dict[str, Any]:
    """A 512 x 512 region near the middle of a ``size`` x ``size`` slide, not tile aligned."""
    r, c = max(0, size // 2 - 196), max(0, size // 2 - 396)
    return {
        "row_start": r,
        "row_end": min(size, r + 512),
        "column_start": c,
        "column_end": min(size, c + 512),
    }


def _measure(server: Any, read: Callable[[], np.ndarray]) -> tuple[np.ndarray, int, int, float]:
    server.log.clear()
    t0 = time.perf_counter()
    out = read()
    return out, server.log.requests, server.log.bytes, time.perf_counter() - t0


def _hdfsspec(url: str, window: dict[str, Any]) -> np.ndarray:
    import hdfsspec

    with hdfsspec.imread(url, {"index_cache": False}) as im:  # a cold open, every run
        return im.get_total_pixel_matrix(**window)


def _plain(url: str, window: dict[str, Any], block_size: int | None) -> np.ndarray:
    import fsspec
    import highdicom as hd

    options = {} if block_size is None else {"block_size": block_size}
    with fsspec.open(url, "rb", **options) as f:
        return hd.imread(f, lazy_frame_retrieval=True).get_total_pixel_matrix(**window)


def demo(size: int = 8192, tile: int = 256, out: Any = None) -> int:
    """Run the demo; return 0 when every method read the same pixels.

    It prints to ``out`` (by default ``sys.stdout`` at the time of the call).
    """
    out = sys.stdout if out is None else out
    import logging

    from hdfsspec.testing import RangeHTTPServer, build_slide, jpeg_tiles

    logging.getLogger("highdicom").setLevel(logging.ERROR)  # "no ICC profile" notices
    tiles = jpeg_tiles(8, tile, 3, quality=80)
    slides = {
        "with BOT": build_slide(size, size, tile=tile, tiles=tiles, offset_table="bot"),
        "no offset table": build_slide(size, size, tile=tile, tiles=tiles, offset_table="empty"),
    }
    window = middle_region(size)
    methods: Sequence[tuple[str, Callable[[str], np.ndarray]]] = (
        ("hdfsspec.imread (dicom::)", partial(_hdfsspec, window=window)),
        (
            "highdicom + fsspec http (default 5 MiB blocks)",
            partial(_plain, window=window, block_size=None),
        ),
        (
            "highdicom + fsspec http (500 kB blocks)",
            partial(_plain, window=window, block_size=500_000),
        ),
    )
    print(
        f"Sample slide: {size} x {size} px, {(size // tile) ** 2} JPEG tiles of {tile} px; "
        f"region {window}",
        file=out,
    )
    print(f"{'layout':<16} {'method':<48} {'requests':>8} {'MB':>8} {'seconds':>8}", file=out)
    ok = True
    with RangeHTTPServer(
        slides_by_name := {k.replace(" ", "_") + ".dcm": v for k, v in slides.items()}
    ) as server:
        for _, read in methods:  # unmeasured: imports, decoders, highdicom's tables
            read(server.url(next(iter(slides_by_name))))
        for layout, name in zip(slides, slides_by_name, strict=True):
            url = server.url(name)
            reference = None
            for label, read in methods:
                pixels, requests, nbytes, seconds = _measure(server, partial(read, url))
                if reference is None:
                    reference = pixels
                ok &= bool(np.array_equal(pixels, reference))
                print(
                    f"{layout:<16} {label:<48} {requests:>8} {nbytes / 1e6:>8.2f} {seconds:>8.2f}",
                    file=out,
                )
            print(
                f"{'':<16} {'(object size)':<48} {'':>8} {len(slides[layout]) / 1e6:>8.2f}",
                file=out,
            )
    print("same pixels from every method: " + ("yes" if ok else "NO"), file=out)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hdfsspec`` command."""
    parser = argparse.ArgumentParser(prog="hdfsspec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="read a region of a sample slide served on loopback")
    run.add_argument("--size", type=int, default=8192, help="slide width and height in pixels")
    run.add_argument("--tile", type=int, default=256, help="tile size in pixels")
    args = parser.parse_args(argv)
    return demo(args.size, args.tile)


if __name__ == "__main__":
    sys.exit(main())

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

REGION: dict[str, Any] = {
    "row_start": 3900,
    "row_end": 4412,
    "column_start": 3700,
    "column_end": 4212,
}


def _measure(server: Any, read: Callable[[], np.ndarray]) -> tuple[np.ndarray, int, int, float]:
    server.log.clear()
    t0 = time.perf_counter()
    out = read()
    return out, server.log.requests, server.log.bytes, time.perf_counter() - t0


def _hdfsspec(url: str) -> np.ndarray:
    import hdfsspec

    with hdfsspec.imread(url) as im:
        return im.get_total_pixel_matrix(**REGION)


def _plain(url: str, block_size: int | None) -> np.ndarray:
    import fsspec
    import highdicom as hd

    options = {} if block_size is None else {"block_size": block_size}
    with fsspec.open(url, "rb", **options) as f:
        return hd.imread(f, lazy_frame_retrieval=True).get_total_pixel_matrix(**REGION)


def demo(size: int = 8192, tile: int = 256, out: Any = sys.stdout) -> int:
    """Run the demo; return 0 when every method read the same pixels."""
    import logging

    from hdfsspec.testing import RangeHTTPServer, build_slide, jpeg_tiles

    logging.getLogger("highdicom").setLevel(logging.ERROR)  # "no ICC profile" notices
    tiles = jpeg_tiles(8, tile, 3, quality=80)
    slides = {
        "with BOT": build_slide(size, size, tile=tile, tiles=tiles, offset_table="bot"),
        "no offset table": build_slide(size, size, tile=tile, tiles=tiles, offset_table="empty"),
    }
    methods: Sequence[tuple[str, Callable[[str], np.ndarray]]] = (
        ("hdfsspec.imread (dicom::)", _hdfsspec),
        ("highdicom + fsspec http (default 5 MiB blocks)", lambda u: _plain(u, None)),
        ("highdicom + fsspec http (500 kB blocks)", lambda u: _plain(u, 500_000)),
    )
    print(
        f"Sample slide: {size} x {size} px, {(size // tile) ** 2} JPEG tiles of {tile} px; "
        f"region {REGION}",
        file=out,
    )
    print(f"{'layout':<16} {'method':<48} {'requests':>8} {'MB':>8} {'seconds':>8}", file=out)
    ok = True
    with RangeHTTPServer(
        slides_by_name := {k.replace(" ", "_") + ".dcm": v for k, v in slides.items()}
    ) as server:
        for layout, name in zip(slides, slides_by_name, strict=True):
            url = server.url(name)
            reference = None
            for label, read in methods:
                region, requests, nbytes, seconds = _measure(server, partial(read, url))
                if reference is None:
                    reference = region
                ok &= bool(np.array_equal(region, reference))
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

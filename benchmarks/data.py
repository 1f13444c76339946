"""Benchmark data: a large tiled slide (BOT, EOT, no offset table) and a 50-segment SEG.

Generation is cheap: a few distinct JPEG tiles are encoded once and reused for
every frame. Files are cached under ``benchmarks/data/`` by their parameters.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdfsspec.testing import build_slide

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Sizes:
    slide: int  # width and height of the slide in pixels
    tile: int
    seg_slices: int
    seg_size: int
    segments: int

    @property
    def tag(self) -> str:
        return f"s{self.slide}t{self.tile}-g{self.seg_slices}x{self.seg_size}x{self.segments}"


FULL = Sizes(slide=40_000, tile=256, seg_slices=100, seg_size=512, segments=50)
QUICK = Sizes(slide=12_800, tile=256, seg_slices=24, seg_size=256, segments=50)


def smooth_tiles(count: int, size: int, quality: int = 80) -> list[bytes]:
    """Distinct low-frequency RGB tiles (a few KB each), as baseline JPEG."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(1)
    tiles = []
    for k in range(count):
        plane = (xx * 0.3 + yy * 0.2 + 25 * k + rng.integers(0, 3, (size, size))) % 256
        rgb = np.stack([plane, 255 - plane, (plane * 0.5 + 64) % 256], -1).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
        data = out.getvalue()
        tiles.append(data + b"\x00" * (len(data) % 2))
    return tiles


def _seg(sizes: Sizes) -> bytes:
    from hdfsspec.testing import build_seg

    seg, _ = build_seg(sizes.seg_slices, sizes.segments, sizes.seg_size, sizes.seg_size, seed=3)
    return seg


def make_data(sizes: Sizes, root: Path | None = None) -> dict[str, Path]:
    """Create (or reuse) the benchmark files; return them by name."""
    root = (root or HERE / "data") / sizes.tag
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    tiles = None
    for table in ("bot", "eot", "empty"):
        path = root / f"slide_{table}.dcm"
        if not path.exists():
            tiles = tiles or smooth_tiles(12, sizes.tile)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(
                build_slide(
                    sizes.slide, sizes.slide, tile=sizes.tile, tiles=tiles, offset_table=table
                )
            )
            tmp.replace(path)
        files[f"slide_{table}"] = path
    path = root / "seg.dcm"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_seg(sizes))
        tmp.replace(path)
    files["seg"] = path
    return files

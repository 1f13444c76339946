"""Benchmark data: a large tiled slide (BOT, EOT, no offset table, dual DICOM-TIFF) and a SEG.

Generation is cheap: a few distinct JPEG tiles are encoded once and reused for
every frame. Files are cached under ``benchmarks/data/<sizes tag>/<object name>.dcm``:
a new object (or new sizes) is generated on the next run, existing ones are reused.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

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


SLIDES: dict[str, dict[str, object]] = {
    "slide_bot": {"offset_table": "bot"},
    "slide_eot": {"offset_table": "eot"},
    "slide_empty": {"offset_table": "empty"},
    "slide_tiff": {"offset_table": "empty", "dual_tiff": True},  # DICOM and TIFF at once
}
"""The slides by name: keyword arguments of ``build_slide`` on top of the sizes."""


@cache
def _tiles(size: int) -> list[bytes]:
    """The encoded tiles every slide of this tile size cycles through (encoded once)."""
    return smooth_tiles(12, size)


def _slide(sizes: Sizes, **options: Any) -> bytes:
    """A square slide of ``sizes``; ``options`` go to ``build_slide``."""
    return build_slide(
        sizes.slide, sizes.slide, tile=sizes.tile, tiles=_tiles(sizes.tile), **options
    )


def _write_once(path: Path, build: Callable[[], bytes]) -> Path:
    """Write ``build()`` to ``path`` unless it exists (atomically: a temporary file first)."""
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(build())
        tmp.replace(path)
    return path


def make_data(sizes: Sizes, root: Path | None = None) -> dict[str, Path]:
    """Create (or reuse) the benchmark files; return them by name."""
    root = (root or HERE / "data") / sizes.tag
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, options in SLIDES.items():
        files[name] = _write_once(root / f"{name}.dcm", partial(_slide, sizes, **options))
    files["seg"] = _write_once(root / "seg.dcm", partial(_seg, sizes))
    return files

"""Benchmark data: a large tiled slide (BOT, EOT, no offset table, dual DICOM-TIFF), a SEG,
and a small slide with larger tiles for the loops over every frame (issue 19).

Generation is cheap: a few distinct JPEG tiles are encoded once and reused for
every frame. Files are cached under ``benchmarks/data/<sizes tag>/<object name>.dcm``
(the small slide under its own tag, the same for ``--quick``): a new object (or new
sizes) is generated on the next run, existing ones are reused.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from hdfsspec.testing import build_encapsulated, build_slide

HERE = Path(__file__).parent
WSI_VERSION = "wsi1"
"""Part of the data's directory names: a new value makes the next run generate the slides
again (wsi1: the slides carry Imaged Volume Width and Height, which wsidicom needs)."""


@dataclass(frozen=True)
class Sizes:
    slide: int  # width and height of the slide in pixels
    tile: int
    seg_slices: int
    seg_size: int
    segments: int

    @property
    def tag(self) -> str:
        sizes = f"s{self.slide}t{self.tile}-g{self.seg_slices}x{self.seg_size}x{self.segments}"
        return f"{sizes}-{WSI_VERSION}"


@dataclass(frozen=True)
class Small:
    """The small slide of the loops: issue 19 measured a 1,024-frame, 19 MB slide."""

    slide: int = 8192  # 32 x 32 tiles of 256: 1,024 frames
    tile: int = 256
    noise: float = 18.0  # texture of the tiles: about 18.4 KB each at quality 90
    quality: int = 90

    @property
    def tag(self) -> str:
        return f"small-s{self.slide}t{self.tile}n{self.noise:g}q{self.quality}-{WSI_VERSION}"


SMALL = Small()
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


def textured_tiles(count: int, size: int, noise: float, quality: int) -> list[bytes]:
    """Distinct RGB tiles, a gradient with Gaussian texture of ``noise`` levels, as baseline
    JPEG: their size follows ``noise`` closely (18: about 18.4 KB at quality 90)."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(19)
    tiles = []
    for k in range(count):
        base = 60 + 0.25 * xx + 0.15 * yy + 8 * k
        plane = np.clip(base + rng.normal(0, noise, (size, size)), 0, 255)
        rgb = np.stack([plane, 255 - plane, plane * 0.5 + 64], -1).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
        data = out.getvalue()
        tiles.append(data + b"\x00" * (len(data) % 2))
    return tiles


@cache
def _tiles(size: int) -> list[bytes]:
    """The encoded tiles every slide of this tile size cycles through (encoded once)."""
    return smooth_tiles(12, size)


def wsi_slide(
    rows: int,
    cols: int,
    *,
    tile: int,
    tiles: list[bytes],
    offset_table: Any = "bot",
    dual_tiff: bool = False,
) -> bytes:
    """``build_slide``'s slide, with the Imaged Volume Width and Height of its pixel matrix.

    The VL Whole Slide Microscopy IOD requires them of a VOLUME image (type 1C); wsidicom
    refuses a pyramid without them, and ``hdfsspec.testing.build_slide`` does not write
    them. The data set is ``build_slide``'s (made with a tiny placeholder frame, read back
    without its Pixel Data), completed and encapsulated again with the real frames in
    ``build_slide``'s order, so every layout (BOT, EOT, none, dual DICOM-TIFF) is the
    builder's own.
    """
    import pydicom

    placeholder = build_slide(rows, cols, tile=tile, tiles=[b"\xff\xd8\xff\xd9"])
    ds = pydicom.dcmread(io.BytesIO(placeholder), stop_before_pixels=True)
    spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    ds.ImagedVolumeWidth = cols * float(spacing[1])  # mm
    ds.ImagedVolumeHeight = rows * float(spacing[0])
    cols_t = -(-cols // tile)
    count = int(ds.NumberOfFrames)
    frames = [tiles[(i * 5 + i // cols_t) % len(tiles)] for i in range(count)]
    return build_encapsulated(
        frames,
        offset_table=offset_table,
        dataset=ds,
        dual_tiff=dual_tiff,
    )


def _slide(sizes: Sizes, **options: Any) -> bytes:
    """A square slide of ``sizes``; ``options`` go to :func:`wsi_slide`."""
    return wsi_slide(
        sizes.slide, sizes.slide, tile=sizes.tile, tiles=_tiles(sizes.tile), **options
    )


def _write_once(path: Path, build: Callable[[], bytes]) -> Path:
    """Write ``build()`` to ``path`` unless it exists (atomically: a temporary file first)."""
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(build())
        tmp.replace(path)
    return path


def _small_slide(small: Small) -> bytes:
    """The small slide (with a BOT): tiles of ``small.noise`` texture, larger than the big
    slides' few KB, so that 1,024 frames make about 19 MB as in issue 19."""
    tiles = textured_tiles(12, small.tile, small.noise, small.quality)
    return wsi_slide(small.slide, small.slide, tile=small.tile, tiles=tiles)


SMALL_SLIDE = "slide_small"


def make_data(
    sizes: Sizes, root: Path | None = None, small: Small | None = SMALL
) -> dict[str, Path]:
    """Create (or reuse) the benchmark files; return them by name (``small``: None for none)."""
    base = root or HERE / "data"
    root = base / sizes.tag
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, options in SLIDES.items():
        files[name] = _write_once(root / f"{name}.dcm", partial(_slide, sizes, **options))
    files["seg"] = _write_once(root / "seg.dcm", partial(_seg, sizes))
    if small is not None:
        (base / small.tag).mkdir(parents=True, exist_ok=True)
        path = base / small.tag / f"{SMALL_SLIDE}.dcm"
        files[SMALL_SLIDE] = _write_once(path, partial(_small_slide, small))
    return files

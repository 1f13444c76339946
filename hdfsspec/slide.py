"""Whole-slide images: the instances of one series read as a slide, with OpenSlide's API.

A DICOM slide is a series of instances: the pyramid levels (``VOLUME`` images),
and a ``LABEL``, an ``OVERVIEW`` and a ``THUMBNAIL`` image. :func:`open_slide`
lists the series once and reads every header in one concurrent round
(:mod:`hdfsspec.instances`); each level is a lazy image as :func:`~hdfsspec.imread`
returns, and :meth:`Slide.read_region` reads a region as OpenSlide and tiffslide do,
its tiles fetched as one batch through highdicom's ``get_total_pixel_matrix``.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import fsspec
import numpy as np

from hdfsspec.errors import SeriesError
from hdfsspec.highdicom.readers import DicomImage, imread
from hdfsspec.instances import (
    NonDicom,
    Series,
    file_name,
    open_instances,
    pooled,
    raise_first,
    select_series,
)
from hdfsspec.io.planning import FetchPlan

__all__ = ["ASSOCIATED", "Slide", "open_slide"]

ASSOCIATED = {"LABEL": "label", "OVERVIEW": "overview", "THUMBNAIL": "thumbnail"}
"""Image Type (its third value) -> the name of an associated image."""
_RTOL = 1e-6  # downsamples and spacings this close are equal


def image_type(dataset: Any) -> str:
    """The third value of Image Type (``VOLUME``, ``LABEL``...), or ``""``."""
    values = list(dataset.get("ImageType", []) or [])
    return str(values[2]).upper() if len(values) > 2 else ""


def _dimensions(image: Any) -> tuple[int, int]:
    """(width, height) of the total pixel matrix (of the frame, for an image not tiled)."""
    width = image.get("TotalPixelMatrixColumns", image.Columns)
    height = image.get("TotalPixelMatrixRows", image.Rows)
    return int(width), int(height)


def _spacing(image: Any) -> tuple[float, float] | None:
    """(row, column) pixel spacing in mm, from the shared functional groups, if given."""
    try:
        measures = image.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        row, column = measures.PixelSpacing
    except (AttributeError, IndexError, ValueError):
        spacing = image.get("PixelSpacing")
        if not spacing:
            return None
        row, column = spacing
    return float(row), float(column)


def _name(image: DicomImage) -> str:
    return file_name(image.file) if image.file is not None else "<in memory>"


def _arranged(
    images: Sequence[DicomImage], name: str
) -> tuple[list[DicomImage], dict[str, DicomImage]]:
    """The levels, finest first, and the associated images by name (``label``,
    ``label_2``...). Two levels of one size raise :class:`~hdfsspec.errors.SeriesError`."""
    levels = sorted(
        (im for im in images if image_type(im) == "VOLUME"),
        key=lambda im: (-_dimensions(im)[0] * _dimensions(im)[1], _name(im)),
    )
    if not levels:
        raise SeriesError(
            f"no VOLUME image (a pyramid level) among {len(images)} instances "
            "(a CT or MR series: hdfsspec.read_series_volume)",
            path=name,
        )
    for a, b in itertools.pairwise(levels):
        if _dimensions(a) == _dimensions(b):
            w, h = _dimensions(a)
            raise SeriesError(
                f"two VOLUME images of {w} x {h} pixels (optical paths, focal planes or "
                f"a concatenation?): {_name(a)}, {_name(b)}; open one with hdfsspec.imread",
                path=name,
            )
    associated: dict[str, DicomImage] = {}
    for im in sorted(images, key=_name):
        kind = ASSOCIATED.get(image_type(im))
        if kind is not None:
            taken = sum(1 for key in associated if key.split("_")[0] == kind)
            associated[kind if not taken else f"{kind}_{taken + 1}"] = im
    return levels, associated


def _pil_rgba(pixels: np.ndarray, inside: tuple[slice, slice]) -> Any:
    """An RGBA PIL image of 8-bit ``pixels`` (grey or RGB), opaque only ``inside``."""
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - Pillow comes with the jpeg extra
        raise ImportError(
            "a PIL image needs Pillow (pip install 'hdfsspec[jpeg]'), or pass as_array=True"
        ) from error
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(
            f"a PIL image holds 8-bit grey or RGB pixels, not {pixels.dtype} of shape "
            f"{pixels.shape}: pass as_array=True"
        )
    rgb = pixels if pixels.ndim == 3 else pixels[..., None]
    rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[..., :3]
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[inside] = 255
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


class Slide:
    """A whole-slide image: pyramid levels and associated images of one series.

    Made by :func:`open_slide`. Sizes and locations follow OpenSlide: ``(width,
    height)`` and ``(x, y)``. Each level is a lazy :class:`highdicom.Image` (as
    :func:`~hdfsspec.imread` returns): any highdicom call works on it, its frames
    fetched in batches.

    Parameters
    ----------
    images : sequence of DicomImage
        The series' images: ``VOLUME`` images are levels (one per size), ``LABEL``,
        ``OVERVIEW`` and ``THUMBNAIL`` images the associated images. The slide owns
        them: :meth:`close` closes them all.
    name : str
        What names the slide in messages (its prefix, glob or first URL).
    """

    def __init__(self, images: Sequence[DicomImage], name: str = "") -> None:
        self.name = name
        levels, associated = _arranged(images, name)
        self.levels: tuple[DicomImage, ...] = tuple(levels)
        """The levels, from the finest (level 0)."""
        self._associated = associated
        self._images = tuple(images)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(map(_dimensions, levels))
        """(width, height) of each level in pixels."""
        w0, h0 = self.level_dimensions[0]
        self.level_downsamples: tuple[float, ...] = tuple(
            (w0 / w + h0 / h) / 2 for w, h in self.level_dimensions
        )
        """How many level-0 pixels a pixel of each level spans (OpenSlide's mean of the
        width and height ratios)."""
        self.level_spacings: tuple[tuple[float, float] | None, ...] = tuple(map(_spacing, levels))
        """(row, column) pixel spacing of each level in mm, None where not given."""

    @property
    def associated(self) -> Mapping[str, DicomImage]:
        """Associated images by name: ``label``, ``overview``, ``thumbnail`` (``label_2``
        for a second label...)."""
        return MappingProxyType(self._associated)

    @property
    def level_count(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def series_uid(self) -> str:
        """The Series Instance UID."""
        return str(self.levels[0].get("SeriesInstanceUID", ""))

    # -- choosing a level ---------------------------------------------------------------
    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The level to read for ``downsample``, as OpenSlide picks it: the coarsest
        whose downsample is not larger (level 0 below it)."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + _RTOL):
                best = level
        return best

    def level_for_spacing(self, spacing: float) -> int:
        """The coarsest level whose pixels are at most ``spacing`` mm wide and high
        (level 0 when even it is coarser).

        Raises :class:`~hdfsspec.errors.SeriesError` when the levels give no spacing.
        """
        if any(s is None for s in self.level_spacings):
            raise SeriesError("a level has no Pixel Spacing", path=self.name)
        best = 0
        for level, given in enumerate(self.level_spacings):
            if given is not None and max(given) <= spacing * (1 + _RTOL):
                best = level
        return best

    # -- regions --------------------------------------------------------------------------
    def _window(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> tuple[int, int, int, int, int, int]:
        """The region's top-left (x, y) in the level's pixels, then the part inside the
        level: column start/stop, row start/stop (0-based, stops excluded)."""
        if not 0 <= operator.index(level) < self.level_count:
            raise IndexError(f"level {level} of a slide of {self.level_count} levels")
        x, y = (operator.index(v) for v in location)
        w, h = (operator.index(v) for v in size)
        if w < 0 or h < 0:
            raise ValueError(f"the size of a region is not negative: {size}")
        ds = self.level_downsamples[level]
        lx, ly = math.floor(x / ds + _RTOL), math.floor(y / ds + _RTOL)
        width, height = self.level_dimensions[level]
        c0, c1 = min(max(lx, 0), width), max(min(lx + w, width), 0)
        r0, r1 = min(max(ly, 0), height), max(min(ly + h, height), 0)
        return lx, ly, c0, max(c0, c1), r0, max(r0, r1)

    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        as_array: bool = False,
        **pixel_options: Any,
    ) -> Any:
        """Read a region of a level, as OpenSlide's and tiffslide's ``read_region``.

        The tiles it covers are fetched as one batch, concurrently.

        Parameters
        ----------
        location : (int, int)
            (x, y) of the region's top-left corner in level-0 pixels. On a coarser
            level it is divided by the level's downsample and floored (as tiffslide
            does; OpenSlide interpolates a fraction of a pixel).
        level : int
            The level (0 is the finest).
        size : (int, int)
            (width, height) of the region in the level's pixels.
        as_array : bool, optional
            Return a NumPy array (height, width[, samples]) instead of a PIL image.
        **pixel_options
            Passed to highdicom's ``get_total_pixel_matrix`` (``dtype``, by default
            ``uint8`` for 8-bit images; ``apply_icc_profile``...).

        Returns
        -------
        PIL.Image.Image or numpy.ndarray
            By default an RGBA image, transparent (0, 0, 0, 0) outside the level, as
            OpenSlide returns; with ``as_array``, the pixels, zero outside the level.
        """
        lx, ly, c0, c1, r0, r1 = self._window(location, level, size)
        w, h = (int(v) for v in size)
        image = self.levels[level]
        if image.BitsAllocated == 8:
            pixel_options.setdefault("dtype", np.uint8)
        samples = (int(image.SamplesPerPixel),) if int(image.SamplesPerPixel) > 1 else ()
        out = np.zeros((h, w, *samples), pixel_options.get("dtype", np.float64))
        if c0 < c1 and r0 < r1:
            pixels = image.get_total_pixel_matrix(
                row_start=r0,
                row_end=r1,
                column_start=c0,
                column_end=c1,
                as_indices=True,
                **pixel_options,
            )
            if pixels.shape[2:] != out.shape[2:] or pixels.dtype != out.dtype:
                out = np.zeros((h, w, *pixels.shape[2:]), pixels.dtype)
            out[r0 - ly : r1 - ly, c0 - lx : c1 - lx] = pixels
        if as_array:
            return out
        return _pil_rgba(out, (slice(r0 - ly, r1 - ly), slice(c0 - lx, c1 - lx)))

    def plan_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> FetchPlan:
        """Dry run of :meth:`read_region`: its tiles and the requests they would cost now."""
        _, _, c0, c1, r0, r1 = self._window(location, level, size)
        if c0 >= c1 or r0 >= r1:
            return FetchPlan((), ())
        return self.levels[level].plan(
            "get_total_pixel_matrix",
            row_start=r0,
            row_end=r1,
            column_start=c0,
            column_end=c1,
            as_indices=True,
        )

    def read_associated(self, name: str, *, as_array: bool = False, **pixel_options: Any) -> Any:
        """The whole associated image ``name`` (``label``, ``overview``, ``thumbnail``).

        Returns an RGBA PIL image (as OpenSlide's ``associated_images``) or, with
        ``as_array``, the pixels; ``pixel_options`` as in :meth:`read_region`.
        """
        if name not in self.associated:
            raise KeyError(
                f"{name!r}: the slide's associated images are {sorted(self.associated)}"
            )
        image = self.associated[name]
        if image.BitsAllocated == 8:
            pixel_options.setdefault("dtype", np.uint8)
        if image.is_tiled:
            pixels = image.get_total_pixel_matrix(**pixel_options)
        else:
            pixels = image.get_frame(1, **pixel_options)
        if as_array:
            return pixels
        return _pil_rgba(pixels, (slice(None), slice(None)))

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Close every level and associated image."""
        for image in self._images:
            image.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Slide({self.name!r}, level_dimensions={self.level_dimensions}, "
            f"associated={sorted(self.associated)})"
        )


def open_slide(
    source: Series,
    storage_options: dict[str, Any] | None = None,
    *,
    series_uid: str | None = None,
    filesystem: fsspec.AbstractFileSystem | None = None,
    non_dicom: NonDicom | None = None,
    **options: Any,
) -> Slide:
    """Open a whole-slide image stored as a series of DICOM instances.

    The prefix is listed (or the glob expanded) once, and the headers of all the
    instances are read in one concurrent round; no pixel is read until asked for.

    Parameters
    ----------
    source : str, os.PathLike or list of them
        A prefix, e.g. ``"gs://bucket/study/series/"`` (with or without
        ``dicom::``; every object under it), a glob (``"s3://bucket/series/*.dcm"``),
        or a list of URLs.
    storage_options : dict, optional
        Options keyed by protocol, as :func:`fsspec.open` takes them, e.g.
        ``{"s3": {"anon": True}}``; top-level keys go to the ``dicom`` layer.
    series_uid : str, optional
        The series to read when the objects hold several (else
        :class:`~hdfsspec.errors.MixedSeriesError`, naming them).
    filesystem : fsspec.AbstractFileSystem, optional
        The filesystem ``source`` is a path of, instead of URLs and ``storage_options``.
    non_dicom : {"warn", "raise"}, optional
        What an object that is not DICOM gets: by default skipped with a
        :class:`~hdfsspec.instances.SkippedObjectWarning` under a prefix or glob, a
        :class:`~hdfsspec.errors.NotDicomError` in a list.
    **options
        Passed to ``fs.open`` for each instance (e.g. ``cache_options``).

    Returns
    -------
    Slide
        ``close()`` or ``with`` releases its files.

    Examples
    --------
    >>> with hdfsspec.open_slide("gs://bucket/study/series/") as slide:  # doctest: +SKIP
    ...     level = slide.get_best_level_for_downsample(4)
    ...     region = slide.read_region((15000, 20000), level, (512, 512))
    """
    name, files = open_instances(
        source, storage_options, filesystem=filesystem, non_dicom=non_dicom, **options
    )
    files = select_series(files, series_uid, name)
    kinds = {"VOLUME", *ASSOCIATED}
    wanted = [f for f in files if image_type(f.metadata.dataset) in kinds]
    for f in files:  # (a file's == asks the store for its info: not used here)
        if image_type(f.metadata.dataset) not in kinds:
            f.close()
    images = pooled(imread, wanted)
    raise_first([*images, *wanted], images)
    try:
        return Slide(images, name)
    except BaseException:
        for image in images:
            image.close()
        raise

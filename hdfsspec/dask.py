"""Images as dask arrays, one task per chunk of tiles, from a thread pool up to a cluster.

:func:`to_dask` (``hdfsspec.to_dask``) returns a lazy :class:`dask.array.Array` of an
image's total pixel matrix with tile-aligned chunks. Each chunk is computed by a task
that reads its tiles through the frame-aware cache in one batch (the pixel call of
highdicom, as :func:`hdfsspec.imread` serves it).

A task carries an :class:`ImageRef`, not the image: a few hundred bytes to pickle
(the ``dicom`` filesystem's storage options, the path, the object's size and version;
no frame bytes, no highdicom tables) and a token dask computes without reading the
object. In the process that made the array the tasks read through the image itself;
in another process (a ``distributed`` worker, a ``spawn`` pool) the first task reopens
the object, pinned to the version the array was made from, and the image is kept for
the tasks that follow (the last :data:`KEPT` images of a process stay open).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from hdfsspec.file import DicomFile
from hdfsspec.highdicom.readers import DicomImage, DicomSegmentation, imread
from hdfsspec.sources import Source

try:
    import dask.array as da
    from dask.base import tokenize
except ImportError as missing:  # pragma: no cover - the dask extra is not installed
    raise ImportError(
        'hdfsspec.to_dask needs dask: pip install "hdfsspec[dask]"'
        " (dask[array], and distributed for clusters)"
    ) from missing

__all__ = ["KEPT", "ImageRef", "to_dask"]

KEPT = 4
"""Images a process keeps open for the tasks of arrays made elsewhere (the least recently
used beyond it are released once no task holds them)."""


class ImageRef:
    """An image as a dask task carries it: how to reopen it, and its token.

    Parameters
    ----------
    image : DicomImage
        An image read lazily (:func:`hdfsspec.imread`): it has a
        :class:`~hdfsspec.file.DicomFile`.

    Notes
    -----
    Pickled, it holds what :class:`~hdfsspec.file.DicomFile` pickles to (the ``dicom``
    filesystem with its storage options, the path, the size and the version the file
    was opened at), never the image. Its token is the image's (the object's protocol,
    path, size and version), computed without a request.
    """

    def __init__(self, image: DicomImage) -> None:
        file = image.file
        if file is None:
            raise TypeError(
                "to_dask reads frames as its tasks need them: open the image with "
                "lazy_frame_retrieval=True (the default)"
            )
        self.reopen = _reopen_args(file)
        self.token = tokenize(image)
        self.held: DicomImage | None = image  # this process's image: never pickled

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("hdfsspec.ImageRef", self.token)

    def __getstate__(self) -> dict[str, Any]:
        return {"reopen": self.reopen, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.reopen, self.token, self.held = state["reopen"], state["token"], None

    def __repr__(self) -> str:
        return f"ImageRef({self.token})"

    def image(self) -> DicomImage:
        """The image: the one this reference was made from, while it is open; otherwise
        the one this process opened for its token (opened on first use)."""
        held = self.held
        if held is not None and held.file is not None and not held.file.closed:
            return held
        return OPENED.get(self)

    def open(self) -> DicomImage:
        """Open the image again (what :meth:`image` does once per process)."""
        reopen, args = self.reopen
        return imread(reopen(*args))


def _reopen_args(file: DicomFile) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """How ``file`` pickles (reopened at the version it was opened at), from its start."""
    reopen, args = file.__reduce__()
    fs, path, mode, blocksize, _, *rest = args  # the position is not the image's
    return reopen, (fs, path, mode, blocksize, 0, *rest)


class Opened:
    """Images reopened in this process by token; the last ``keep`` stay open.

    Two tasks that need one image at once open it once. An image let go is not closed
    here (a task of another thread may be reading it): it closes when collected.
    """

    def __init__(self, keep: int = KEPT) -> None:
        self.keep = keep
        self.images: OrderedDict[str, DicomImage] = OrderedDict()
        self.lock = threading.Lock()
        self.opening: dict[str, threading.Lock] = {}

    def get(self, ref: ImageRef) -> DicomImage:
        """The image of ``ref``, opened if this process has none open."""
        image = self._kept(ref.token)
        if image is not None:
            return image
        with self.lock:
            opening = self.opening.setdefault(ref.token, threading.Lock())
        with opening:
            image = self._kept(ref.token)
            if image is None:
                image = ref.open()
                with self.lock:
                    self.images[ref.token] = image
                    while len(self.images) > self.keep:
                        self.images.popitem(last=False)
                    self.opening.pop(ref.token, None)
        return image

    def _kept(self, token: str) -> DicomImage | None:
        with self.lock:
            image = self.images.get(token)
            if image is None or image.file is None or image.file.closed:
                return None
            self.images.move_to_end(token)
            return image


OPENED = Opened()
"""This process's images of arrays made elsewhere."""


def _tiled(image: DicomImage) -> bool:
    """Whether highdicom reads the image as one total pixel matrix."""
    return bool(image.is_tiled and image.is_indexable_as_total_pixel_matrix())


def _samples(image: DicomImage, pixel_kwargs: dict[str, Any]) -> int:
    """Samples per pixel of highdicom's output: a palette colour image becomes RGB."""
    palette = image.get("PhotometricInterpretation") == "PALETTE COLOR"
    if palette and pixel_kwargs.get("apply_palette_color_lut") is not False:
        return 3
    return int(image.get("SamplesPerPixel", 1))


def _runs(total: int, step: int) -> tuple[int, ...]:
    """Chunk sizes of ``total`` in runs of ``step`` (the last one shorter)."""
    sizes = [step] * (total // step)
    return tuple([*sizes, total % step] if total % step else sizes)


def _group(tiles_per_chunk: int | tuple[int, int]) -> tuple[int, int]:
    group = (tiles_per_chunk,) * 2 if isinstance(tiles_per_chunk, int) else tiles_per_chunk
    if len(group) != 2 or any(not isinstance(n, int) or n < 1 for n in group):
        raise ValueError(
            f"tiles_per_chunk must be a positive int or a pair of them, not {tiles_per_chunk!r}"
        )
    return group[0], group[1]


def _chunks(
    image: DicomImage, tiled: bool, group: tuple[int, int], samples: int
) -> tuple[tuple[int, ...], ...]:
    rows, cols = int(image.Rows), int(image.Columns)
    tail = ((samples,),) if samples > 1 else ()
    if tiled:
        total_rows = int(image.TotalPixelMatrixRows)
        total_cols = int(image.TotalPixelMatrixColumns)
        return (_runs(total_rows, rows * group[0]), _runs(total_cols, cols * group[1]), *tail)
    return (_runs(int(image.number_of_frames), group[0]), (rows,), (cols,), *tail)


def read_chunk(
    ref: ImageRef,
    tiled: bool,
    pixel_kwargs: dict[str, Any],
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """One chunk: its tiles (or frames) read in one batch, decoded by highdicom."""
    if block_info is None:  # dask's map_blocks gives it (this function takes it)
        raise TypeError("read_chunk is a task of hdfsspec.to_dask: it needs block_info")
    location = block_info[None]["array-location"]
    image = ref.image()
    if tiled:
        (r0, r1), (c0, c1) = location[:2]
        return image.get_total_pixel_matrix(
            row_start=r0 + 1,
            row_end=r1 + 1,
            column_start=c0 + 1,
            column_end=c1 + 1,
            **pixel_kwargs,
        )
    f0, f1 = location[0]
    return image.get_frames(range(f0 + 1, f1 + 1), **pixel_kwargs)


def to_dask(
    source: Source | DicomFile | DicomImage,
    storage_options: dict[str, Any] | None = None,
    *,
    tiles_per_chunk: int | tuple[int, int] = 1,
    dtype: Any = np.float64,
    **pixel_kwargs: Any,
) -> da.Array:
    """A lazy dask array of an image's pixels, in tile-aligned chunks.

    Parameters
    ----------
    source : str, os.PathLike, fsspec.core.OpenFile, file, DicomFile or DicomImage
        What :func:`hdfsspec.imread` takes, or an image it returned (read lazily).
    storage_options : dict, optional
        Options keyed by protocol, as :func:`hdfsspec.imread` takes them (with a URL).
    tiles_per_chunk : int or (int, int), optional
        Tiles per chunk along the rows and the columns (an int: both); 1 by default,
        one chunk per tile. For an image that is not tiled, frames per chunk.
    dtype : numpy dtype, optional
        As in highdicom's ``get_total_pixel_matrix``: float64 by default;
        ``np.uint8`` (for example) gives the stored values of an 8-bit slide.
    **pixel_kwargs
        Other arguments of highdicom's ``get_total_pixel_matrix`` (``get_frames`` for an
        image that is not tiled): ``apply_voi_transform``, ``apply_icc_profile``...

    Returns
    -------
    dask.array.Array
        For a tiled image (TILED_FULL or TILED_SPARSE, one focal plane and optical
        path), its total pixel matrix, as ``get_total_pixel_matrix`` returns it:
        ``(rows, columns)`` for one sample per pixel, ``(rows, columns, samples)``
        otherwise; chunks of ``tiles_per_chunk`` tiles, those of the last row and
        column cut at the matrix's edge. For any other image, its frames stacked as
        ``get_frames`` returns them, ``(frames, rows, columns[, samples])``, chunks of
        ``tiles_per_chunk`` frames.

    Notes
    -----
    Each chunk is one task, which fetches its tiles in one concurrent batch. A task
    pickles small (see :class:`ImageRef`) and is tokenized without a request. The
    array holds the image it was made from: in this process (dask's threaded
    scheduler) the tasks read through it and its cache; a worker process reopens the
    object once, at the version the array was made from (another version raises
    :class:`~hdfsspec.errors.ObjectChangedError`), which costs it the header's
    request (none with a persisted index on its machine). Without offset table each
    worker walks the items as far as the frames of its chunks.
    """
    if isinstance(source, DicomSegmentation):
        raise TypeError(
            "to_dask reads an image's total pixel matrix or frames, not a Segmentation's "
            "segments: give its URL (its stored frames are then read as an image)"
        )
    group, out = _group(tiles_per_chunk), np.dtype(dtype)  # checked before any request
    if isinstance(source, DicomImage):
        if storage_options:
            raise TypeError("storage_options apply to a URL; an open image has its filesystem")
        image = source
    else:
        image = imread(source, storage_options)
    try:
        ref = ImageRef(image)
        tiled = _tiled(image)
        chunks = _chunks(image, tiled, group, _samples(image, pixel_kwargs))
    except BaseException:
        if image is not source:  # opened here: closed here
            image.close()
        raise
    kwargs = {"dtype": out, **pixel_kwargs}
    name = "hdfsspec-tiles-" + tokenize(ref, tiled, chunks, kwargs)
    return da.map_blocks(
        read_chunk,
        name=name,
        chunks=chunks,
        dtype=out,
        meta=np.empty((0,) * len(chunks), dtype=out),
        ref=ref,
        tiled=tiled,
        pixel_kwargs=kwargs,
    )

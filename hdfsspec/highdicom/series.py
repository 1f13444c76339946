"""A series of single-frame images as a :class:`highdicom.Volume`, by highdicom's own helper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset

from hdfsspec.errors import SeriesError

__all__ = ["volume_from_series"]


def volume_from_series(datasets: Sequence[Dataset], *, name: str, **options: Any) -> hd.Volume:
    """The volume of a series of single-frame images (:func:`highdicom.get_volume_from_series`).

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The images, with their pixels, in any order.
    name : str
        What names the series in messages (its prefix, glob or first URL).
    **options
        Passed to :func:`highdicom.get_volume_from_series` (``dtype``,
        ``apply_modality_transform``, ``atol``...).

    Returns
    -------
    highdicom.Volume
        The slices stacked, sorted along the normal of their planes.

    Raises
    ------
    hdfsspec.errors.SeriesError
        Slices that do not make a volume (orientations, spacings or frames of
        reference that differ, slices not regularly spaced...): highdicom's reason.
    """
    try:
        return hd.get_volume_from_series(datasets, **options)
    except ValueError as error:
        raise SeriesError(f"the images do not make a volume: {error}", path=name) from error

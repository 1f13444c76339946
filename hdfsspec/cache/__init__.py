"""The frame-aware cache: what is learnt of an object's layout, and the frames it holds.

:class:`~hdfsspec.cache.dicom_cache.DicomFrameCache` (fsspec's ``cache_type="dicom"``)
learns the header and the frame index (:mod:`~hdfsspec.cache.layout`), walks the items
of an object without offset table (:mod:`~hdfsspec.cache.walk`,
:mod:`~hdfsspec.cache.item_scan`), keeps frame blocks in a bounded LRU
(:mod:`~hdfsspec.cache.blocks`, :mod:`~hdfsspec.cache.frames`), reads tables in the
background (:mod:`~hdfsspec.cache.background`) and persists indexes
(:mod:`~hdfsspec.cache.persist`, :mod:`~hdfsspec.cache.persist_entry`,
:mod:`~hdfsspec.cache.private`); :mod:`~hdfsspec.cache.progress` reports long walks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DicomFrameCache"]


def __getattr__(name: str) -> Any:  # hdfsspec.cache.DicomFrameCache, without an import cycle
    if name == "DicomFrameCache":
        from hdfsspec.cache.dicom_cache import DicomFrameCache

        return DicomFrameCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

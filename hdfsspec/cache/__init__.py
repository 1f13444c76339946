"""The frame-aware cache: what is learnt of an object's layout, and the frames it holds.

:class:`~hdfsspec.cache.dicom_cache.DicomFrameCache` (fsspec's ``cache_type="dicom"``)
owns three parts: a :class:`~hdfsspec.cache.layout.Layout` (the header and the frame
index), a :class:`~hdfsspec.cache.frames.FrameStore` (the frames, in a bounded LRU of
:mod:`~hdfsspec.cache.blocks`) and the :class:`~hdfsspec.cache.requests.Requests` both
make. The layout walks the items of an object without offset table
(:mod:`~hdfsspec.cache.walk`, :mod:`~hdfsspec.cache.item_scan`), reads tables in the
background (:mod:`~hdfsspec.cache.background`) and uses persisted indexes
(:mod:`~hdfsspec.cache.persist`, :mod:`~hdfsspec.cache.persist_entry`,
:mod:`~hdfsspec.cache.private`); :mod:`~hdfsspec.cache.progress` reports long walks.
The frame store follows the way reads walk the frames (:mod:`~hdfsspec.cache.readahead`)
and plans a read without fetching it (:mod:`~hdfsspec.cache.dry_run`)."""

from __future__ import annotations

from typing import Any

__all__ = ["DicomFrameCache"]


def __getattr__(name: str) -> Any:  # hdfsspec.cache.DicomFrameCache, without an import cycle
    if name == "DicomFrameCache":
        from hdfsspec.cache.dicom_cache import DicomFrameCache

        return DicomFrameCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

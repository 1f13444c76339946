"""``dicom::`` paths for universal-pathlib: ``UPath("dicom::s3://bucket/slide.dcm", s3={...})``.

Registered with universal-pathlib by the ``universal_pathlib.implementations`` entry
point of the package, so that such a path is a :class:`DicomPath` (no warning about an
unknown protocol). Its filesystem is the ``dicom`` filesystem over the target that the
URL and the options name; its path, ``name``, ``parent`` and children (``/``) are those
of the target's path, as for universal-pathlib's ``simplecache::`` paths; ``open()``
returns a frame-aware :class:`~hdfsspec.file.DicomFile`, and ``hdfsspec.imread(path)``
reads through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from fsspec import AbstractFileSystem
from upath import UPath

__all__ = ["DicomPath"]


class DicomPath(UPath):
    """A path under the ``dicom`` layer (see the module notes)."""

    __slots__ = ()

    @classmethod
    def _fs_factory(
        cls, urlpath: str, protocol: str, storage_options: Mapping[str, Any]
    ) -> AbstractFileSystem:
        return super()._fs_factory(urlpath, protocol, _without_fo(storage_options))

    def with_segments(self, *pathsegments: Any) -> DicomPath:
        """A path of the same target (``parent``, ``/``, ``with_name``...): made on the
        target's own UPath, under ``dicom::`` again (universal-pathlib's parser passes a
        chained path on to the next layer only for its own caching protocols)."""
        options = dict(self.storage_options)
        protocol = options.pop("target_protocol", None)
        if getattr(self, "_relative_base", None) is not None or not isinstance(protocol, str):
            return super().with_segments(*pathsegments)
        inner = dict(options.pop("target_options", None) or {})
        parts = [p.path if isinstance(p, DicomPath) else p for p in pathsegments]
        target = UPath(*parts, protocol=protocol, **inner)
        made = type(self)(f"dicom::{target}", **_by_protocol(protocol, inner), **options)
        if hasattr(self, "_fs_cached"):  # the same filesystem, as universal-pathlib's own
            made._fs_cached = self._fs_cached
        return made

    @property
    def storage_options(self) -> Mapping[str, Any]:
        """The options of the ``dicom`` layer (``target_protocol``, ``target_options``...)."""
        return MappingProxyType(_without_fo(self._storage_options))


def _by_protocol(protocol: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options of each layer of a target (``target_protocol``/``target_options``),
    keyed by protocol as a chained URL takes them."""
    out: dict[str, Any] = {}
    while protocol:
        layer = dict(options or {})
        out[protocol] = layer
        protocol, options = layer.pop("target_protocol", None), layer.pop("target_options", None)
    return out


def _without_fo(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without ``fo``, the path fsspec's chaining hands each layer (a child
    path would keep its parent's), in every layer of ``target_options``."""
    out = {k: v for k, v in options.items() if k != "fo"}
    if isinstance(out.get("target_options"), Mapping):
        out["target_options"] = _without_fo(out["target_options"])
    return out

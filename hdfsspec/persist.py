"""A local, persisted store of frame indexes and header bytes.

Reopening an object whose index is known costs no header or index request: the
entry holds the :class:`~hdfsspec.index.FrameIndex` and the header bytes. Entries
are keyed by the object's identity (protocol, path, size and a version: ETag,
generation, version id or modification time, whichever the backend reports), so
a replaced object never matches an old entry. Entries are written atomically
(temporary file, then rename) and validated on load: a damaged entry is deleted
and rebuilt, never trusted. Objects without any version are not persisted.

The directory is ``$HDFSSPEC_INDEX_CACHE`` if set (``off`` disables the store),
else ``~/.cache/hdfsspec/index``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hdfsspec.index import FrameIndex

__all__ = ["IndexStore", "default_store", "object_identity"]

_MAGIC = b"HDFSIDX1"
_VERSION_KEYS = (
    "ETag",
    "etag",
    "generation",
    "VersionId",
    "version_id",
    "mtime",
    "last_modified",
    "LastModified",
    "created",
)
_OFF = {"", "0", "off", "false", "no", "none"}


def object_identity(protocol: str, path: str, info: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the identity of an object from its ``info()``, or None without a version."""
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value not in (None, ""):
            return {
                "protocol": protocol,
                "path": path,
                "size": int(info["size"]),
                "version": f"{key}={value}",
            }
    return None


class IndexStore:
    """Frame indexes and header bytes persisted in ``directory``.

    Parameters
    ----------
    directory : str or Path
        Where entries live (created if missing).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _file(self, identity: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self.directory / digest[:2] / f"{digest}.idx"

    def load(self, identity: Mapping[str, Any]) -> tuple[FrameIndex, bytes] | None:
        """Return ``(index, header bytes)`` of ``identity`` or None; damaged entries go."""
        path = self._file(identity)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return self._decode(data, identity)
        except (ValueError, KeyError, TypeError, struct.error):
            path.unlink(missing_ok=True)  # damaged or not ours: rebuild, never trust
            return None

    @staticmethod
    def _decode(data: bytes, identity: Mapping[str, Any]) -> tuple[FrameIndex, bytes]:
        if data[:8] != _MAGIC:
            raise ValueError("not an index entry")
        (meta_len,) = struct.unpack("<Q", data[8:16])
        meta = json.loads(data[16 : 16 + meta_len])
        prefix = data[16 + meta_len :]
        if meta["identity"] != dict(identity):
            raise ValueError("entry of another object")
        if hashlib.sha256(prefix).hexdigest() != meta["prefix_sha256"]:
            raise ValueError("header bytes damaged")
        index = FrameIndex.from_dict(meta["index"])  # validates bounds and order
        if index.size != identity["size"] or len(prefix) < index.header_end:
            raise ValueError("entry inconsistent with the object")
        return index, prefix

    def save(self, identity: Mapping[str, Any], index: FrameIndex, prefix: bytes) -> None:
        """Write an entry atomically; errors writing are ignored (the store is a cache)."""
        meta = json.dumps(
            {
                "identity": dict(identity),
                "index": index.to_dict(),
                "prefix_sha256": hashlib.sha256(prefix).hexdigest(),
            }
        ).encode()
        path = self._file(identity)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(_MAGIC + struct.pack("<Q", len(meta)) + meta + prefix)
            os.replace(tmp, path)
        except OSError:
            Path(locals().get("tmp", path.with_suffix(".tmp"))).unlink(missing_ok=True)


def default_store(directory: str | os.PathLike[str] | bool | None = None) -> IndexStore | None:
    """The store to use: ``directory`` if given (False disables), else the environment's."""
    if directory is False:
        return None
    if directory is None or directory is True:
        env = os.environ.get("HDFSSPEC_INDEX_CACHE")
        if env is not None and env.strip().lower() in _OFF:
            return None
        directory = env or Path.home() / ".cache" / "hdfsspec" / "index"
    return IndexStore(directory)

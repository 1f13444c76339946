"""A local, persisted store of frame indexes and header bytes.

Reopening an object whose index is known costs no header or index request: the
entry holds the :class:`~hdfsspec.index.FrameIndex` and the header bytes. Entries
are keyed by the object's identity (protocol, path, size and a version: ETag,
generation, version id or modification time, whichever the backend reports), so
a replaced object never matches an old entry. Entries are written atomically
(temporary file, then rename) and validated on load: a damaged entry is deleted
and rebuilt, never trusted. Objects without any version are not persisted.

Beside each entry the store remembers the identity last saved for the object's
protocol and path (:meth:`IndexStore.latest`): an open that finds one only needs
the object's current identity to use the entry, so on S3 it asks for one byte
instead of the header (one tiny GET gives the size and the ETag).

The store is bounded: once its entries take more than ``max_bytes`` (1 GiB by
default), the least recently used go (an entry is used when saved or loaded) until
they take at most nine tenths of it. Saving a new version of an object removes the
entry of the version it replaces.

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

__all__ = ["MAX_BYTES", "IndexStore", "default_store", "object_identity"]

MAX_BYTES = 2**30
"""Default bound of a store's entries, in bytes."""
_MAGIC = b"HDFSIDX2"  # then the SHA-256 of the rest: any damage to an entry is seen
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
_LOCAL_KEYS = ("ino", "created")  # with a local file's mtime (``tar -x``, ``cp -p``)
_OFF = {"", "0", "off", "false", "no", "none"}


def object_identity(protocol: str, path: str, info: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the identity of an object from its ``info()``, or None without a version."""
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value not in (None, ""):
            version = [f"{key}={value}"]
            if key == "mtime":  # a local file: a copy keeping size and mtime is a new inode
                version += [f"{k}={info[k]}" for k in _LOCAL_KEYS if info.get(k) is not None]
            return {
                "protocol": protocol,
                "path": path,
                "size": int(info["size"]),
                "version": ";".join(version),
            }
    return None


class IndexStore:
    """Frame indexes and header bytes persisted in ``directory``.

    Parameters
    ----------
    directory : str or Path
        Where entries live (created if missing).
    max_bytes : int, optional
        Bound of the entries' total size; the least recently used go beyond it.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def _file(self, identity: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self.directory / digest[:2] / f"{digest}.idx"

    def _pointer(self, protocol: str, path: str) -> Path:
        key = json.dumps([protocol, path]).encode()
        return self.directory / "latest" / f"{hashlib.sha256(key).hexdigest()}.json"

    def latest(self, protocol: str, path: str) -> dict[str, Any] | None:
        """The identity last saved for ``protocol`` and ``path``, if its entry exists.

        A hint only: the caller compares it with the object's current identity and
        loads the entry only when they are equal.
        """
        try:
            identity = json.loads(self._pointer(protocol, path).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(identity, dict) or not self._file(identity).exists():
            return None
        if identity.get("protocol") != protocol or identity.get("path") != path:
            return None
        return identity

    def load(self, identity: Mapping[str, Any]) -> tuple[FrameIndex, bytes] | None:
        """Return ``(index, header bytes)`` of ``identity`` or None; damaged entries go."""
        path = self._file(identity)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            out = self._decode(data, identity)
        except (ValueError, KeyError, TypeError, struct.error):
            path.unlink(missing_ok=True)  # damaged or not ours: rebuild, never trust
            return None
        _touch(path)  # recently used: evicted last
        return out

    @staticmethod
    def _decode(data: bytes, identity: Mapping[str, Any]) -> tuple[FrameIndex, bytes]:
        if data[:8] != _MAGIC:
            raise ValueError("not an index entry")
        body = data[40:]
        if hashlib.sha256(body).digest() != data[8:40]:
            raise ValueError("entry damaged")
        (meta_len,) = struct.unpack("<Q", body[:8])
        meta = json.loads(body[8 : 8 + meta_len])
        prefix = body[8 + meta_len :]
        if meta["identity"] != dict(identity):
            raise ValueError("entry of another object")
        index = FrameIndex.from_dict(meta["index"])  # validates bounds and order
        if index.size != identity["size"] or len(prefix) < index.header_end:
            raise ValueError("entry inconsistent with the object")
        return index, prefix

    def save(self, identity: Mapping[str, Any], index: FrameIndex, prefix: bytes) -> None:
        """Write an entry atomically; errors writing are ignored (the store is a cache)."""
        meta = json.dumps({"identity": dict(identity), "index": index.to_dict()}).encode()
        body = struct.pack("<Q", len(meta)) + meta + prefix
        entry = _MAGIC + hashlib.sha256(body).digest() + body
        protocol, path = str(identity["protocol"]), str(identity["path"])
        replaced = self.latest(protocol, path)
        if _write_atomically(self._file(identity), entry):
            _write_atomically(self._pointer(protocol, path), json.dumps(dict(identity)).encode())
            if replaced is not None and replaced != dict(identity):
                self._file(replaced).unlink(missing_ok=True)  # a version no longer there
            self.evict()

    def entries(self) -> list[tuple[Path, int, float]]:
        """``(file, size, last use)`` of every entry."""
        out = []
        for path in self.directory.glob("??/*.idx"):
            try:
                st = path.stat()
            except OSError:  # removed meanwhile (another process)
                continue
            out.append((path, st.st_size, st.st_mtime))
        return out

    def evict(self) -> int:
        """Remove the least recently used entries while they take more than ``max_bytes``.

        Down to nine tenths of it, so that the next saves do not evict again at
        once; pointers (:meth:`latest`) of removed entries go too. Returns the number
        of entries removed.
        """
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        removed = 0
        for path, size, _ in sorted(entries, key=lambda e: e[2]):
            if total <= 0.9 * self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        for pointer in self.directory.glob("latest/*.json"):
            try:
                identity = json.loads(pointer.read_text())
                gone = not self._file(identity).exists()
            except (OSError, ValueError, TypeError):
                gone = True
            if gone:
                pointer.unlink(missing_ok=True)
        return removed


def _write_atomically(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temporary file and a rename; False on error."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return True
    except OSError:  # the store is a cache: a failed write costs a rebuild, nothing more
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # read-only store: it still serves
        pass


def default_store(
    directory: str | os.PathLike[str] | bool | None = None, max_bytes: int | None = None
) -> IndexStore | None:
    """The store to use: ``directory`` if given (False disables), else the environment's."""
    if directory is False:
        return None
    if directory is None or directory is True:
        env = os.environ.get("HDFSSPEC_INDEX_CACHE")
        if env is not None and env.strip().lower() in _OFF:
            return None
        directory = env or Path.home() / ".cache" / "hdfsspec" / "index"
    return IndexStore(directory, max_bytes or MAX_BYTES)

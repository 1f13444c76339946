"""A local, persisted store of frame indexes and header bytes.

Reopening an object whose index is known costs no header or index request: the
entry holds the :class:`~hdfsspec.dicom.index.FrameIndex` and the header bytes. Entries
are keyed by the object's identity (protocol, path, size and a version: ETag,
generation, version id or modification time, whichever the backend reports), so
a replaced object never matches an old entry. Objects without any version are not
persisted.

Entries hold header bytes (patient names, in clear), and a tampered entry could
serve one frame's bytes as another's: the store is private, as ssh's keys are. Its
directory (and the parents it makes) is made 0700, its files 0600; a directory or
file another user owns, or that group or others may write, is refused with an
:class:`IndexStoreWarning` naming the directory, and the store is not used again in
this process (indexes are built in memory, as with the store off). Entries are
written atomically (temporary file, then rename), sealed with an HMAC-SHA256 under
the store's ``key`` file (32 random bytes, made on first use) and checked when
loaded (:mod:`hdfsspec.cache.persist_entry`); one that fails, or that the object
contradicts when used (:meth:`IndexStore.discard`), is deleted and rebuilt.

Beside each entry the store remembers the identity last saved for the object's
protocol and path (:meth:`IndexStore.latest`): an open that finds one only needs
the object's current identity to use the entry, so on S3 it asks for one byte
instead of the header (one tiny GET gives the size and the ETag).

The store is bounded: once its entries take more than ``max_bytes`` (1 GiB by
default), the least recently used go (an entry is used when saved or loaded) until
they take at most nine tenths of it. Saving a new version of an object removes the
entry of the version it replaces.

The directory is ``$HDFSSPEC_INDEX_CACHE`` if set (``off`` disables the store),
else ``index`` in the user's cache directory for hdfsspec, as platformdirs gives it
(``$XDG_CACHE_HOME/hdfsspec/index``, by default ``~/.cache/hdfsspec/index``, on Linux;
``~/Library/Caches/hdfsspec/index`` on macOS; ``%LOCALAPPDATA%\\hdfsspec\\Cache\\index``
on Windows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from hdfsspec._log import get_logger
from hdfsspec.cache.persist_entry import MAX_ENTRY, DamagedEntry, check_index, decode, encode
from hdfsspec.cache.private import (
    KEY_BYTES,
    Untrusted,
    check_private,
    make_private,
    new_key,
    read_private,
    write_atomically,
)
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.io.redact import redact_url

__all__ = ["MAX_BYTES", "IndexStore", "IndexStoreWarning", "default_store", "object_identity"]

MAX_BYTES = 2**30
"""Default bound of a store's entries, in bytes."""
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
_KEY = "key"  # the file of the store's MAC key, in its directory
_POINTER_BYTES = 2**16
_REFUSED: set[str] = set()
_log = get_logger(__name__)
"""Directories refused in this process (each warned about once)."""


class IndexStoreWarning(UserWarning):
    """The index store's directory or one of its files is not private: it is not used."""


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
        Where entries live (created mode 0700 if missing, with its missing parents).
        It must be this user's and not writable by group or others, as must every
        file in it; otherwise the store is not used (see the module notes).
    max_bytes : int, optional
        Bound of the entries' total size; the least recently used go beyond it.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._usable: bool | None = None  # the directory checked, the key read (once)
        self._key = b""

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its key (read again where unpickled)."""
        return {**self.__dict__, "_usable": None, "_key": b""}

    # -- privacy --------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Whether the store is used: its directory private (checked once) and its key read.

        False also when the directory cannot be made or the key neither read nor made
        (a read-only location): then without a warning.
        """
        if str(self.directory) in _REFUSED:
            return False
        if self._usable is None:
            try:
                make_private(self.directory)
                check_private(os.stat(self.directory), "the directory", directory=True)
                self._key = self._read_key()
                self._usable = True
            except Untrusted as exc:
                self._refuse(str(exc))
                self._usable = False
            except OSError:  # the store is a cache: without it, indexes are built in memory
                self._usable = False
        return self._usable

    def _refuse(self, reason: str) -> None:
        """Stop using the store's directory in this process, saying why (once)."""
        name = str(self.directory)
        if name not in _REFUSED:
            _REFUSED.add(name)
            warnings.warn(
                IndexStoreWarning(
                    f"hdfsspec index store {name}: {reason}. It is not used in this process "
                    "(frame indexes are built in memory): make the directory and its files "
                    "yours and writable (the key readable) by you alone, or remove the "
                    "directory, or set HDFSSPEC_INDEX_CACHE to another one."
                ),
                stacklevel=4,
            )

    def _read_key(self) -> bytes:
        """The store's MAC key: read, or made (0600) if there is none yet."""
        path, name = self.directory / _KEY, f"its key file {_KEY!r}"
        try:
            key = read_private(path, KEY_BYTES + 1, name, secret=True)
        except FileNotFoundError:
            new_key(path)
            key = read_private(path, KEY_BYTES + 1, name, secret=True)
        if len(key) != KEY_BYTES:
            raise Untrusted(f"{name} is not {KEY_BYTES} bytes long")
        return key

    # -- entries --------------------------------------------------------------------------
    def _file(self, identity: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self.directory / digest[:2] / f"{digest}.idx"

    def _pointer(self, protocol: str, path: str) -> Path:
        key = json.dumps([protocol, path]).encode()
        return self.directory / "latest" / f"{hashlib.sha256(key).hexdigest()}.json"

    def _read(self, path: Path, limit: int) -> bytes | None:
        """A file of the store, or None if missing, unreadable, or refused (the store too)."""
        try:
            return read_private(path, limit, str(path.relative_to(self.directory)))
        except Untrusted as exc:
            self._refuse(str(exc))
        except OSError:  # missing, removed meanwhile, or a symbolic link
            pass
        return None

    def latest(self, protocol: str, path: str) -> dict[str, Any] | None:
        """The identity last saved for ``protocol`` and ``path``, if its entry exists.

        A hint only: the caller compares it with the object's current identity and
        loads the entry only when they are equal.
        """
        if not self.usable:
            return None
        data = self._read(self._pointer(protocol, path), _POINTER_BYTES)
        identity = _identity(data) if data is not None else None
        if identity is None or not self._file(identity).exists():
            return None
        if identity.get("protocol") != protocol or identity.get("path") != path:
            return None
        return identity

    def load(self, identity: Mapping[str, Any]) -> tuple[FrameIndex, bytes] | None:
        """Return ``(index, header bytes)`` of ``identity`` or None; damaged entries go."""
        if not self.usable:
            return None
        path = self._file(identity)
        data = self._read(path, MAX_ENTRY + 1)
        if data is None:
            return None
        try:
            out = decode(self._key, data, identity)
        except DamagedEntry:
            _remove(path)  # damaged, forged or not ours: rebuild, never trust
            return None
        _touch(path)  # recently used: evicted last
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: frame index loaded from the store", _name(identity))
        return out

    def discard(self, identity: Mapping[str, Any]) -> None:
        """Delete the entry of ``identity``: the object contradicted it (rebuilt next open)."""
        _remove(self._file(identity))

    def save(self, identity: Mapping[str, Any], index: FrameIndex, prefix: bytes) -> None:
        """Write an entry atomically; errors writing are ignored (the store is a cache).

        An index that is not consistent, or header bytes that do not reach the
        frames, are not saved: such an entry would be refused when loaded.
        """
        if not self.usable or len(prefix) < index.header_end:
            return
        try:
            check_index(index)
        except DamagedEntry:
            return
        entry = encode(self._key, identity, index, prefix)
        protocol, path = str(identity["protocol"]), str(identity["path"])
        replaced = self.latest(protocol, path)
        if write_atomically(self._file(identity), entry):
            write_atomically(self._pointer(protocol, path), json.dumps(dict(identity)).encode())
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("%s: frame index saved in %s", _name(identity), self.directory)
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
                identity = _identity(read_private(pointer, _POINTER_BYTES, pointer.name))
            except (OSError, Untrusted):
                identity = None
            if identity is None or not self._file(identity).exists():
                pointer.unlink(missing_ok=True)
        return removed


def _identity(data: bytes) -> dict[str, Any] | None:
    """The identity a pointer file holds, or None for anything else (never an error)."""
    try:
        identity = json.loads(data)
        if isinstance(identity, dict):
            json.dumps(identity, sort_keys=True)  # it names an entry (:meth:`IndexStore._file`)
            return identity
    except (ValueError, TypeError, RecursionError):
        pass
    return None


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only store: the entry fails again, and is rebuilt in memory
        pass


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
        directory = env or Path(user_cache_dir("hdfsspec", appauthor=False), "index")
    return IndexStore(directory, max_bytes or MAX_BYTES)


def _name(identity: Mapping[str, Any]) -> str:
    """The object of ``identity`` for a log message (a signed URL's secrets redacted)."""
    return redact_url(f"{identity.get('protocol')}: {identity.get('path')}")

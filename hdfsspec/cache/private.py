"""Files only this user may write: made 0700 / 0600, and checked as ssh checks its keys.

What the persisted index store (:mod:`hdfsspec.cache.persist`) keeps is private: header
bytes with patient names, and frame offsets that, altered, would serve one frame's
bytes as another's. Directories are made mode 0700 (with the parents missing),
files 0600 through a temporary file and a rename, whatever the umask; a file or
directory found owned by another user, or writable by group or others (or, for a
secret, readable by them), raises :class:`Untrusted`. Where there are no user ids
(Windows) nothing is checked.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path

__all__ = [
    "KEY_BYTES",
    "Untrusted",
    "check_private",
    "make_private",
    "new_key",
    "read_private",
    "write_atomically",
]

KEY_BYTES = 32
"""Length of a key made by :func:`new_key`."""
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class Untrusted(Exception):
    """A file or directory that another user owns or may write (or read, a secret)."""


def _uid() -> int | None:
    """This process's user id, or None where there are none (Windows: not checked)."""
    getuid = getattr(os, "getuid", None)
    return getuid() if getuid is not None else None


def check_private(
    st: os.stat_result, name: str, *, directory: bool = False, secret: bool = False
) -> None:
    """Raise :class:`Untrusted` (its message begins with ``name``) unless ``st`` is this
    user's and only this user may write it (or read it, if ``secret``): ssh's rule."""
    uid = _uid()
    if uid is None:
        return
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    if not kind(st.st_mode):
        raise Untrusted(f"{name} is not a " + ("directory" if directory else "regular file"))
    if st.st_uid != uid:
        raise Untrusted(f"{name} is owned by user {st.st_uid}, not by this user ({uid})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (0o077 if secret else 0o022):
        may = "read or write it" if secret else "write it"
        raise Untrusted(f"{name} has mode {mode:04o}: group or others may {may}")


def read_private(path: Path, limit: int, name: str, *, secret: bool = False) -> bytes:
    """At most ``limit`` bytes of a file (``name`` in errors), once found
    private: :class:`Untrusted` if another user owns or may write it (``OSError``
    through a symbolic link)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        check_private(os.fstat(fd), name, secret=secret)
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit)
    finally:
        os.close(fd)


def make_private(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each mode 0700 (whatever the umask)."""
    missing = []
    while not directory.is_dir() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # made meanwhile (another process): checked when used
            continue
        os.chmod(path, 0o700)


def new_key(path: Path) -> None:
    """Make a key file: 32 random bytes, 0600, never replacing one made meanwhile."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-", suffix=".tmp")
    try:
        os.chmod(tmp, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, path)  # atomic, and fails if another process made the key first
        except FileExistsError:
            pass
        except OSError:  # no hard links here: a race replaces a key (its entries rebuilt)
            if not path.exists():
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` (0600) through a temporary file and a rename; False on error."""
    tmp = None
    try:
        make_private(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # made 0600
        os.chmod(tmp, 0o600)  # whatever the platform's mkstemp did
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return True
    except OSError:  # the store is a cache: a failed write costs a rebuild, nothing more
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False

"""Files opened on a persisted index without a request: the first read checks the version.

A file reopened with the frame index saved for its path (see
:mod:`hdfsspec.cache.persist`) needs nothing from the object before its first frames:
the entry holds its header and index. Where every read can be made conditional on the
saved version (``If-Match``: S3, HTTP with a strong ETag, Azure; see
:func:`~hdfsspec.io.version_pin.pinned_info`), the open fetches nothing, and the first
frames' requests check the version: a reopen costs one round trip, not two.

If the object was replaced since the entry was saved, that first request fails
(:class:`~hdfsspec.errors.ObjectChangedError`) and the entry is discarded. When the file
has served nothing yet (its header, index and bytes come from the entry too), it is
opened again from the object, and the read goes on there: the caller sees the new
object. When it has (a highdicom image built its data set from that header), the error
is raised, saying so: open it again. A file that served something from the entry and
made no request before :meth:`~hdfsspec.file.DicomFile.close` checks the version there,
in one request of one byte, and raises the same error if it changed (not when the
garbage collector closes it: no request is made from there).

Until the version is checked, the file's reads run one at a time (a lock of the file):
threads that start reading a replaced object at once would otherwise meet the refusal
each, and one would reopen the file under the others' reads. Once checked, they run
at once again.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from hdfsspec._fork import renew_after_fork
from hdfsspec.errors import ObjectChangedError

if TYPE_CHECKING:
    from hdfsspec.file import DicomFile

__all__ = ["check_before_close", "checked_by_first_read", "replaced_error"]

F = TypeVar("F", bound=Callable[..., Any])


def checked_by_first_read(method: F) -> F:
    """Wrap a method of :class:`~hdfsspec.file.DicomFile` that serves the object's content.

    On a file opened on an unchecked saved version: a replaced object met before the
    file served anything opens the file again and calls ``method`` once more; met after,
    raises :func:`replaced_error`. A call that returns without a request has served
    content from the entry.
    """

    @functools.wraps(method)
    def call(self: DicomFile, *args: Any, **kwargs: Any) -> Any:
        if self._checked:
            return method(self, *args, **kwargs)
        with _first_reads(self).lock:  # one at a time: a reopen in place under no other read
            return _first_read(self, method, args, kwargs)

    return call  # type: ignore[return-value]


def _first_read(file: DicomFile, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """:func:`checked_by_first_read`'s call of ``method``, under the file's lock."""
    if file._checked:  # another thread's read checked it meanwhile
        return method(file, *args, **kwargs)
    try:
        out = method(file, *args, **kwargs)
    except ObjectChangedError as error:
        if file._checked:  # replaced after its first request: while being read
            raise
        served = file._served
        _discard(file)
        if served:
            raise replaced_error(file, error) from None
        _reopen(file)
        return method(file, *args, **kwargs)
    if not file._checked:
        file._served = True
    return out


class _FirstReads:
    """The lock of a file's reads while its saved version is unchecked (renewed in a
    forked child: a thread of the parent may have held it at the fork)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        self.lock = threading.RLock()


_MAKING = threading.Lock()


def _first_reads(file: DicomFile) -> _FirstReads:
    """The file's :class:`_FirstReads` (made once; kept when the file reopens in place)."""
    held: _FirstReads | None = file.__dict__.get("_first_reads")
    if held is None:
        with _MAKING:
            held = file.__dict__.setdefault("_first_reads", _FirstReads())
    return held


def check_before_close(file: DicomFile) -> None:
    """Check the saved version with one byte if the file served content it never checked.

    Raises
    ------
    ObjectChangedError
        The object was replaced since its index was saved (the entry is discarded).
    """
    if file._checked or not file._served:
        return
    try:
        file._frame_cache.requests.get([(0, 1)], "header")  # counted in the file's stats
    except ObjectChangedError as error:
        _discard(file)
        raise replaced_error(file, error) from None


def replaced_error(file: DicomFile, error: ObjectChangedError) -> ObjectChangedError:
    """The error of a file that served content from the entry of a version now gone."""
    return ObjectChangedError(
        "the object was replaced since its frame index was saved, and this file served "
        "its header (or bytes) from that index: open it again (the saved index is "
        f"discarded; {error})",
        path=getattr(file._frame_cache, "path", None) or file.path,
        offset=error.offset,
    )


def _discard(file: DicomFile) -> None:
    """Discard the entry; the file checks no more (its reads are refused from now on)."""
    file._checked = True
    store, identity = file.fs.index_store, file._opened["identity"]
    if store is not None and identity is not None:
        store.discard(identity)


def _reopen(file: DicomFile) -> None:
    """Open ``file`` again in place from the object (its saved entry is gone): same
    object, position and options, a new cache."""
    loc, kwargs = file.loc, file.kwargs
    file._frame_cache.close()
    opened = file.fs.opening(file.path)
    type(file).__init__(file, file.fs, file.path, block_size=file.blocksize, **opened, **kwargs)
    file.loc = loc

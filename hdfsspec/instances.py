"""The instances of a series, named by a prefix, a glob or a list, opened in one round.

A whole-slide image or a CT series is many objects. :func:`open_instances` lists a
prefix (or expands a glob) once, then fetches the first bytes of every object in
one ``cat_ranges`` call of the target filesystem (concurrent on s3fs, gcsfs, adlfs
and HTTP), the size and version of each taken from the listing: each object
becomes a :class:`~hdfsspec.file.DicomFile` whose header is parsed from those
bytes, with no request of its own. A list of URLs is opened concurrently (a thread
pool), each object with its own first request. No highdicom here.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar, Union

import fsspec

from hdfsspec.cache.persist import object_identity
from hdfsspec.errors import MixedSeriesError, NotDicomError, SeriesError
from hdfsspec.file import DicomFile
from hdfsspec.filesystem import DicomFileSystem
from hdfsspec.io.link import link_sized_first_request
from hdfsspec.io.redact import redact_url, scrub
from hdfsspec.io.retry import ATTEMPTS, ShortRead, backoff, is_transient, transport_error
from hdfsspec.sources import locate, open_dicom

__all__ = [
    "NonDicom",
    "Series",
    "SkippedObjectWarning",
    "file_name",
    "open_instances",
    "pooled",
    "raise_first",
    "read_ranges",
    "read_whole",
    "select_series",
    "series_uid_of",
]

T = TypeVar("T")

Series = Union[str, "os.PathLike[str]", list[Any], tuple[Any, ...]]
"""What names the instances of a series: a prefix (``"gs://bucket/study/series/"``,
with or without ``dicom::``), a glob (``"s3://bucket/series/*.dcm"``) or a list of URLs."""

NonDicom = Literal["warn", "raise"]
"""What an object that is not DICOM gets: skipped with a :class:`SkippedObjectWarning`,
or a :class:`~hdfsspec.errors.NotDicomError`."""

_MAGIC = re.compile(r"[*?\[]")
_POOL = 32  # threads opening the objects of a list, or parsing headers


class SkippedObjectWarning(UserWarning):
    """An object under the prefix (or matching the glob) is not DICOM: it was skipped."""


def pooled(work: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
    """``work(item)`` for every item, concurrently; results in order, failures returned."""

    def guarded(item: T) -> Any:
        try:
            return work(item)
        except Exception as error:
            return error

    if len(items) <= 1:
        return [guarded(item) for item in items]
    with ThreadPoolExecutor(min(_POOL, len(items)), thread_name_prefix="hdfsspec-open") as pool:
        return list(pool.map(guarded, items))


def raise_first(owners: Sequence[Any], results: Sequence[Any]) -> None:
    """If any of ``results`` is a failure: close every owner (files, images) and raise it."""
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for owner in owners:
            if not isinstance(owner, BaseException):
                owner.close()
        raise failures[0]


def _name(fs: DicomFileSystem, path: str) -> str:
    """The URL of ``path`` for messages (any signature redacted)."""
    return redact_url(fs.fs.unstrip_protocol(path))


def file_name(f: DicomFile) -> str:
    """The URL of an open file for messages (any signature redacted)."""
    return _name(f.fs, f.path)


def _dicom_fs(filesystem: fsspec.AbstractFileSystem) -> DicomFileSystem:
    if isinstance(filesystem, DicomFileSystem):
        return filesystem
    return fsspec.filesystem("dicom", fs=filesystem)


def _listed(
    source: str | bytes | os.PathLike[str],
    storage_options: dict[str, Any] | None,
    filesystem: Any,
) -> tuple[DicomFileSystem, str, dict[str, dict[str, Any]]]:
    """The filesystem, the name and the objects (path: info) of a prefix or glob."""
    if filesystem is not None:
        fs = _dicom_fs(filesystem)
        path = fs._target(os.fsdecode(source))
    else:  # a URL, a path or a UPath (with its own filesystem)
        fs, path = locate(source, storage_options)
        assert isinstance(fs, DicomFileSystem)
    web = fs.target_protocol in ("http", "https")  # a URL's query is no glob
    globbed = "*" in path if web else _MAGIC.search(path) is not None
    found = fs.glob(path, detail=True) if globbed else fs.find(path, detail=True)
    objects = {p: i for p, i in sorted(found.items()) if i.get("type") != "directory"}
    name = redact_url(fs.fs.unstrip_protocol(path))
    if not objects:
        what = "matches" if globbed else "under"
        raise SeriesError(f"no object {what} it", path=name)
    return fs, name, objects


def read_ranges(
    target: fsspec.AbstractFileSystem,
    paths: Sequence[str],
    starts: Sequence[int],
    stops: Sequence[int],
    names: Sequence[str],
) -> list[bytes]:
    """The bytes ``[start, stop)`` of each path, in one ``cat_ranges`` round (retried).

    Ranges that failed transiently (or came back short) are read again, round after
    round; a failure that outlasts the retries is a
    :class:`~hdfsspec.errors.TransportError` naming the object; others
    (``FileNotFoundError``, ``PermissionError``) are raised as they are.
    """

    def read(ks: list[int]) -> list[Any]:
        got = target.cat_ranges(
            [paths[k] for k in ks],
            [starts[k] for k in ks],
            [stops[k] for k in ks],
            on_error="return",
        )
        return [_checked(x, starts[k], stops[k]) for k, x in zip(ks, got, strict=True)]

    out = read(list(range(len(paths)))) if paths else []
    for attempt in range(1, ATTEMPTS):
        again = [k for k, x in enumerate(out) if isinstance(x, BaseException) and is_transient(x)]
        if not again:
            break
        time.sleep(backoff(attempt))
        for k, x in zip(again, read(again), strict=True):
            out[k] = x
    for k, x in enumerate(out):
        if isinstance(x, BaseException):
            raise scrub(transport_error(x, names[k], starts[k], stops[k]))
    return out


def _checked(data: Any, start: int, stop: int) -> Any:
    if isinstance(data, bytes | bytearray) and len(data) < stop - start:
        return ShortRead(start, stop, len(data))
    return bytes(data) if isinstance(data, bytearray) else data


def _open_listed(
    fs: DicomFileSystem, objects: dict[str, dict[str, Any]], open_kwargs: dict[str, Any]
) -> list[DicomFile | NotDicomError]:
    """Every listed object opened, its first bytes fetched in one round (none for an
    object whose header and index are persisted); an empty object is not DICOM."""
    paths = list(objects)
    infos = [i if "size" in i else fs.info(p) for p, i in objects.items()]  # a lone object
    store = fs.index_store
    identities = [
        object_identity(fs.target_protocol, p, i) for p, i in zip(paths, infos, strict=True)
    ]
    known = [
        store.load(ident) if store is not None and ident is not None else None
        for ident in identities
    ]
    nbytes = fs.options.first_request or link_sized_first_request(fs.link.estimate)
    wanted = [k for k, i in enumerate(infos) if known[k] is None and int(i["size"]) > 0]
    firsts = read_ranges(
        fs.fs,
        [paths[k] for k in wanted],
        [0] * len(wanted),
        [min(nbytes, int(infos[k]["size"])) for k in wanted],
        [_name(fs, paths[k]) for k in wanted],
    )
    first = dict(zip(wanted, firsts, strict=True))
    options = dict(open_kwargs.pop("cache_options", None) or {})
    out: list[DicomFile | NotDicomError] = []
    for k, (path, info) in enumerate(zip(paths, infos, strict=True)):
        if int(info["size"]) == 0:
            out.append(NotDicomError("an empty object", path=_name(fs, path)))
            continue
        cache_options = {**options, "known": known[k]}
        if k in first:
            cache_options["prefix"] = first[k]
        f = fs.open(
            path,
            "rb",
            size=int(info["size"]),
            identity=identities[k],
            info=info,
            cache_options=cache_options,
            **open_kwargs,
        )
        assert isinstance(f, DicomFile)
        out.append(f)
    return out


def _parsed(f: DicomFile | NotDicomError) -> DicomFile | NotDicomError:
    """The file with its header parsed (a request only for a header beyond the first
    bytes), or why it is not DICOM (the file then closed)."""
    if isinstance(f, NotDicomError):
        return f
    try:
        _ = f.metadata
    except NotDicomError as error:
        f.close()
        return error
    return f


def _skipped(opened: list[Any], non_dicom: NonDicom) -> list[DicomFile]:
    """The DICOM files; the others warned about, or raised (the files then closed)."""
    rejected = [x for x in opened if isinstance(x, NotDicomError)]
    files = [x for x in opened if isinstance(x, DicomFile)]
    if rejected and non_dicom == "raise":
        raise_first(files, rejected)
    for error in rejected:
        warnings.warn(f"skipped, not DICOM: {error}", SkippedObjectWarning, stacklevel=4)
    return files


def open_instances(
    source: Series,
    storage_options: dict[str, Any] | None = None,
    *,
    filesystem: fsspec.AbstractFileSystem | None = None,
    non_dicom: NonDicom | None = None,
    **open_kwargs: Any,
) -> tuple[str, list[DicomFile]]:
    """Open every DICOM object of a prefix, a glob or a list, their headers read in one round.

    Parameters
    ----------
    source : str, os.PathLike or list of them
        A prefix (every object under it, at any depth), a glob, or a list of URLs.
    storage_options : dict, optional
        Options keyed by protocol, as :func:`fsspec.open` takes them.
    filesystem : fsspec.AbstractFileSystem, optional
        The filesystem ``source`` is a path of (wrapped in the ``dicom`` layer unless
        it is one), instead of URLs and ``storage_options``.
    non_dicom : {"warn", "raise"}, optional
        What an object that is not DICOM gets (an empty one included): by default,
        skipped with a :class:`SkippedObjectWarning` under a prefix or glob, a
        :class:`~hdfsspec.errors.NotDicomError` in a list.
    **open_kwargs
        Passed to ``fs.open``.

    Returns
    -------
    name : str
        The prefix or glob (for messages), or the first URL of a list.
    files : list of DicomFile
        The objects, sorted by path (a list: in its order), headers parsed.
    """
    if not isinstance(source, list | tuple):  # a URL, a path, a UPath
        fs, name, objects = _listed(source, storage_options, filesystem)
        opened: list[Any] = _open_listed(fs, objects, dict(open_kwargs))
        policy: NonDicom = non_dicom or "warn"
    else:
        urls = list(source)
        if not urls:
            raise SeriesError("an empty list of objects")
        name, policy = redact_url(str(urls[0])), non_dicom or "raise"

        def one(url: str | os.PathLike[str]) -> DicomFile:
            if filesystem is None:
                return open_dicom(url, storage_options, **open_kwargs)
            f = _dicom_fs(filesystem).open(os.fsdecode(url), "rb", **open_kwargs)
            assert isinstance(f, DicomFile)
            return f

        opened = pooled(one, urls)
        raise_first(opened, [x for x in opened if not isinstance(x, DicomFile)])
    parsed = pooled(_parsed, opened)
    raise_first(opened, [x for x in parsed if not isinstance(x, DicomFile | NotDicomError)])
    return name, _skipped(parsed, policy)


def series_uid_of(f: DicomFile) -> str:
    """The Series Instance UID of an open file ("" when it has none)."""
    return str(f.metadata.dataset.get("SeriesInstanceUID", ""))


def select_series(files: list[DicomFile], series_uid: str | None, name: str) -> list[DicomFile]:
    """The files of one series: ``series_uid``, or the only one there is.

    The others are closed. Several series and no ``series_uid`` raise
    :class:`~hdfsspec.errors.MixedSeriesError` naming each series (with one of its
    objects); a ``series_uid`` none has, :class:`~hdfsspec.errors.SeriesError`.
    """
    uids = [series_uid_of(f) for f in files]
    example = {uid: f for f, uid in reversed(list(zip(files, uids, strict=True)))}
    found = sorted(example)
    if series_uid is None and len(found) > 1:
        for f in files:
            f.close()
        listed = "; ".join(
            f"{uid} ({uids.count(uid)} objects, e.g. {file_name(example[uid])})" for uid in found
        )
        raise MixedSeriesError(
            f"objects of {len(found)} series: {listed}; pick one with series_uid=",
            path=name,
            series_uids=tuple(found),
        )
    keep = [f for f, uid in zip(files, uids, strict=True) if series_uid in (None, uid)]
    for f, uid in zip(files, uids, strict=True):
        if series_uid not in (None, uid):
            f.close()
    if not keep:
        raise SeriesError(
            f"no object of series {series_uid} (found: {', '.join(found)})", path=name
        )
    return keep


def read_whole(files: Sequence[DicomFile]) -> list[bytes]:
    """The bytes of each file: those its open fetched, the rest read by each file itself.

    The rest of a file is read through the file (at once for all of them), so that it
    comes from the version opened: a signed S3 read's ``If-Match``, an HTTP or Azure
    ETag, a local file's inode (:mod:`hdfsspec.io.version_pin`); an object replaced since
    its first bytes raises :class:`~hdfsspec.errors.ObjectChangedError` instead of
    mixing two versions. Each object's length is checked against its size.
    """

    def rest(f: DicomFile) -> bytes:
        held = f.metadata.prefix
        if len(held) >= f.size:
            return bytes(held[: f.size])
        return bytes(held) + f._fetch_ranges([(len(held), f.size)])[0]

    out = pooled(rest, files)
    for got in out:
        if isinstance(got, BaseException):
            raise got
    return out

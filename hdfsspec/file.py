"""The read-only file object of the ``dicom`` filesystem."""

from __future__ import annotations

import datetime
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from fsspec.spec import AbstractBufferedFile

from hdfsspec._types import MiB
from hdfsspec.cache.dicom_cache import DicomFrameCache
from hdfsspec.dicom.frame_table import frame_columns
from hdfsspec.dicom.index import FrameIndex
from hdfsspec.dicom.parse import ParsedHeader, number_of_frames
from hdfsspec.errors import ReadOnlyError
from hdfsspec.io.link import ramped_size
from hdfsspec.io.planning import FetchPlan, frame_numbers
from hdfsspec.io.redact import redact_url, scrub
from hdfsspec.io.retry import transport_error
from hdfsspec.io.stats import CacheStats
from hdfsspec.io.stream import Sink
from hdfsspec.io.version_pin import VersionPin
from hdfsspec.unchecked import check_before_close, checked_by_first_read

if TYPE_CHECKING:
    import pandas

    from hdfsspec.filesystem import DicomFileSystem

__all__ = ["DicomFile"]


class DicomFile(AbstractBufferedFile):
    """A DICOM object opened for reading through its frame-aware cache.

    Reads (``read``, ``seek``...) behave as on any fsspec file; on top of them,
    :meth:`read_frames` and :meth:`prefetch` fetch whole frames in one
    concurrent round through the target filesystem's ``cat_ranges``.

    Parameters
    ----------
    fs : DicomFileSystem
        The filesystem that opened the file.
    path : str
        Path of the object on the target filesystem.
    mode : str
        Only ``"rb"``.
    size : int, optional
        Object size, if known (saves an ``info`` call).
    cache_options : dict, optional
        Extra arguments of :class:`~hdfsspec.cache.dicom_cache.DicomFrameCache`.
    identity : dict, optional
        Identity of the object (see :func:`hdfsspec.cache.persist.object_identity`); with
        the filesystem's index store, known indexes are reused and new ones saved.
    etag : str, optional
        The object's ETag when opened: signed S3 reads send it as ``If-Match``.
    info : dict, optional
        The target's info of the object when opened: reads of HTTP(S) targets send
        its ETag as ``If-Match`` (see :mod:`hdfsspec.io.version_pin`).
    """

    def __init__(
        self,
        fs: DicomFileSystem,
        path: str,
        mode: str = "rb",
        block_size: Any = "default",
        cache_options: dict[str, Any] | None = None,
        size: int | None = None,
        identity: dict[str, Any] | None = None,
        etag: str | None = None,
        info: dict[str, Any] | None = None,
        verified: bool = True,
        **kwargs: Any,
    ) -> None:
        if mode != "rb":
            raise ReadOnlyError(
                f"the dicom filesystem is read-only: cannot open {path!r} in mode {mode!r}"
            )
        kwargs.pop("cache_type", None)
        self._opened = {"identity": identity, "info": _portable(info)}
        # opened on a saved version that no request has checked yet (see hdfsspec.unchecked)
        self._checked, self._served = verified, False
        self._pin = VersionPin(lambda: fs.fs, path, info)
        self._signed = fs.signed_reader(path, etag, self._target_ranges)
        options = dict(cache_options or {})
        options.setdefault("fetch_ranges", self._fetch_ranges)
        if self._signed is not None or self._pin.streams:  # else every window is read whole
            options.setdefault("stream_ranges", self._stream_ranges)
        # the name of the object in errors and progress: a presigned HTTPS URL's query redacted
        options.setdefault("path", redact_url(fs.fs.unstrip_protocol(path)))
        options.setdefault("options", fs.options)
        options.setdefault("link", fs.link)
        options.setdefault("progress", fs.progress)
        store = fs.index_store
        if store is not None and identity is not None:
            options.setdefault("known", store.load(identity))
            options.setdefault(
                "on_index", lambda index, prefix: store.save(identity, index, prefix)
            )
            options.setdefault("on_bad_index", lambda: store.discard(identity))
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size=block_size,
            cache_type="dicom",
            cache_options=options,
            size=size,
            **kwargs,
        )
        self.cache: DicomFrameCache
        self._stats = self.cache.stats
        # frames are read through it even where a layer over dicom:: (blockcache::) gives
        # the file a cache of its own for byte reads
        self._frame_cache = self.cache

    def __reduce__(self) -> Any:
        """Reopened where it is unpickled, pinned to the version this file was opened at
        (its ETag, version or ``os.stat``), not to whatever the object is by then."""
        reopen, args = super().__reduce__()
        *head, kwargs = args
        return reopen, (*head, {**kwargs, **self._opened})

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        """dask's token: the object's identity (protocol, path, size and version: ETag,
        generation, version id or modification time), without a request; an object
        without version (a memory file, an HTTP server without ETag) gets this open
        file's own token."""
        identity = self._opened["identity"]
        if identity is not None:
            return ("hdfsspec.DicomFile", sorted(identity.items()))
        if "_dask_token" not in self.__dict__:  # this file's, from its first tokenize
            self.__dict__["_dask_token"] = uuid.uuid4().hex
        return ("hdfsspec.DicomFile", self.path, self.size, self.__dict__["_dask_token"])

    def close(self) -> None:
        """Close the file: stop the cache's read-ahead and release its frame blocks.

        fsspec calls the cache's ``close`` itself from 2026.7 on; earlier versions only
        drop the cache, which would leave a scan's windows in flight. A file reopened
        from a saved index that served its header and made no request checks the
        object's version first (one byte: see :mod:`hdfsspec.unchecked`).
        """
        cache = getattr(self, "_frame_cache", None)
        try:
            if not self.closed and cache is not None:
                check_before_close(self)  # content served from a saved index never checked
        finally:
            if not self.closed and cache is not None:
                cache.close()  # idempotent: fsspec's own call, where it makes one, is harmless
            super().close()

    def __del__(self) -> None:
        """Closed by the garbage collector: no request then (not the version check)."""
        self._served = False
        super().__del__()

    # -- backend -----------------------------------------------------------------------
    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._fetch_ranges([(start, end)])[0]

    def _fetch_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of ``ranges``, or the first failure, with any URL secret redacted
        (:func:`~hdfsspec.io.redact.scrub`: raised here, outside the ``except``, so that
        the original does not ride along as the copy's context).

        The readers below retry transient failures (:mod:`hdfsspec.io.retry`); one that
        outlasted them is raised as :class:`~hdfsspec.errors.TransportError` naming the
        object and the range; other errors (``FileNotFoundError``, ``PermissionError``,
        :class:`~hdfsspec.errors.ObjectChangedError`...) as they are.
        """
        fetch = self._target_ranges if self._signed is None else self._signed
        error: BaseException
        try:
            out: list[Any] = fetch(ranges)
        except Exception as raised:
            error = raised
            span = (min(a for a, _ in ranges), max(b for _, b in ranges)) if ranges else (0, 0)
        else:
            failed = [k for k, x in enumerate(out) if isinstance(x, BaseException)]
            if not failed:
                self._checked = True  # a request of the version opened: it is the object's
                return out
            error, span = out[failed[0]], ranges[failed[0]]
        name = getattr(self.cache, "path", None) or self.path
        raise scrub(transport_error(error, name, *span))

    def _stream_ranges(self, ranges: Sequence[tuple[int, int]], sink: Sink) -> Future[None] | None:
        """Start GETs of ``ranges`` whose bodies go to ``sink`` as they arrive (signed S3
        reads, HTTP(S) targets; see :mod:`hdfsspec.io.stream`), or None where the target
        reads only whole ranges. Nothing is raised here: a range that fails is read
        again by :meth:`_fetch_ranges`, which says why if it fails there too."""
        try:
            if self._signed is not None:
                return self._signed.stream(ranges, sink)
            return self._pin.stream(ranges, sink)
        except Exception:
            return None

    def _target_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Ranges through the target filesystem, pinned to the opened version."""
        return self._pin.read(ranges)

    # -- frames -------------------------------------------------------------------------
    @property
    def _frames(self) -> DicomFrameCache:
        if self.closed or self.cache is None:
            raise ValueError(f"I/O operation on closed file {self.path!r}")
        return self._frame_cache

    read = checked_by_first_read(AbstractBufferedFile.read)

    @property
    @checked_by_first_read
    def header(self) -> ParsedHeader:
        """The parsed header: bytes, pydicom data set, offsets (fetched on first use)."""
        return self._frames.parsed

    @property
    @checked_by_first_read
    def metadata(self) -> ParsedHeader:
        """The header for its data set, not waiting for an Extended Offset Table.

        :attr:`header` when the first request holds the tables; otherwise the data
        set before the table (``complete`` False) while the table is read in the
        background for :attr:`header`.
        """
        return self._frames.metadata

    @property
    @checked_by_first_read
    def index(self) -> FrameIndex:
        """The :class:`~hdfsspec.dicom.index.FrameIndex` (built on first use)."""
        return self._frames.index

    @property
    def stats(self) -> CacheStats:
        """Requests, bytes and hits of this file, per phase (kept after ``close``)."""
        return self._stats

    @checked_by_first_read
    def read_frames(self, frames: Sequence[int]) -> list[bytes]:
        """Return the encoded bytes of ``frames`` (0-based), fetched in one round.

        Encapsulated frames are returned with their fragments joined; native
        frames as the smallest byte range that holds them (for 1-bit data whose
        frames do not start on a byte boundary, see ``index.bit_offset``).
        """
        return self._frames.read_frames(list(frames))

    def iter_frames(
        self,
        frames: Iterable[int] | None = None,
        batch_bytes: int | None = None,
        ahead: int | None = None,
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(frame, encoded bytes)`` in order, fetching batches ahead.

        Frames go in batches of about ``batch_bytes`` (by default one round trip's
        worth of the link's bandwidth, at least 2 MiB and at most a sixteenth of the
        cache bound); ``ahead`` batches (by default up to 8, holding at most a quarter
        of the cache bound) are fetched while one is consumed, each over its own
        connection, so a pass over every frame runs at the link's pace (a single
        stream is often held back by the client). Without offset table the items are
        walked batch by batch, never further ahead than that. The batches in flight
        count against the cache bound: the cache keeps fewer frame blocks meanwhile.
        """
        wanted = list(frames) if frames is not None else None
        budget = batch_bytes or self._batch_bytes()
        if ahead is None:  # up to 8 in flight, holding at most a quarter of the cache bound
            ahead = max(2, min(8, self._frames.options.max_cache_bytes // (4 * budget)))
        batches = self.frame_batches(wanted, budget, walk_ahead=budget, ramp=ahead)
        cache = self._frames
        if cache.parsed.header.pixel_data_offset is not None:
            cache.view(frames=1)  # the first frame: learns whether the items must be walked
        # batches in flight and the one being yielded; twice while a batch's frames are
        # cut from the bytes it fetched. A walk of the items fetches its own windows
        # ahead: its batches are in memory once formed, and each is yielded at once
        # (held back, they would wait for the walk to pass later ones).
        walked = cache.layout.scan is not None
        queued = 0 if walked else max(1, ahead)
        held = ((1 if walked else 2 * queued) + 1) * budget
        blocks = cache.frames.blocks
        blocks.reserve(held)  # counted against the cache bound: fewer blocks kept meanwhile
        try:
            with ThreadPoolExecutor(
                max(1, ahead), thread_name_prefix="hdfsspec-read-ahead"
            ) as pool:
                queue: deque[tuple[list[int], Future[list[bytes]]]] = deque()
                for batch in batches:
                    queue.append((batch, pool.submit(cache.read_frames, batch, False)))
                    if len(queue) > queued:
                        done, pending = queue.popleft()
                        yield from zip(done, pending.result(), strict=True)
                while queue:
                    done, pending = queue.popleft()
                    yield from zip(done, pending.result(), strict=True)
        finally:
            blocks.release(held)

    def _batch_bytes(self) -> int:
        link = self._frames.link.estimate
        bound = self._frames.options.max_cache_bytes
        # about one round trip's worth of the link each: with ``ahead`` of them in flight
        # the link stays busy over several connections (one stream is client-bound)
        return int(max(1, min(bound // 16, max(2 * MiB, link.rtt * link.bandwidth))))

    def frame_batches(
        self, frames: list[int] | None, budget: int, walk_ahead: int = 0, ramp: int = 0
    ) -> Iterator[list[int]]:
        """Split ``frames`` (all when None) into batches of about ``budget`` bytes, in order.

        Without offset table the items are walked as the batches are asked for, only
        as far as the frames (plus ``walk_ahead`` bytes, for sequential readers). With
        ``ramp``, the first ``ramp`` batches grow to ``budget`` (1/ramp, 2/ramp ... of
        it, see :func:`~hdfsspec.io.link.ramped_size`): batches fetched together would
        arrive together.
        """
        cache = self._frames
        parsed = cache.parsed
        total = 0 if parsed.header.pixel_data_offset is None else number_of_frames(parsed)
        chosen = frame_numbers(frames) if frames is not None else range(total)
        wanted = np.asarray(chosen, dtype=np.int64)
        cache.check_range(wanted)
        index = None
        ordered = bool(np.all(wanted[1:] >= wanted[:-1]))  # every frame in order, typically
        if frames and not walk_ahead:  # a known set: one walk to the furthest frame
            index = cache.view(frames=int(wanted.max()) + 1)
        batch: list[int] = []
        nbytes, i, made = 0, 0, 0  # made: batches yielded
        limit = ramped_size(budget, ramp, 1)
        while i < wanted.size:
            f = int(wanted[i])
            if index is None or (f >= index.number_of_frames and index.number_of_frames < total):
                index = cache.view(frames=f + 1, ahead=walk_ahead)  # walks on without a table
            # the run of wanted frames this index holds, sized at once
            run = wanted[i:]
            if ordered:  # the frames before the first one beyond the index
                run = run[: int(np.searchsorted(run, index.number_of_frames))]
            else:
                beyond = np.flatnonzero(run >= index.number_of_frames)
                run = run[: beyond[0]] if beyond.size else run
            if not run.size:  # not a frame of the index: no bytes of its own
                run, sizes = wanted[i : i + 1], np.zeros(1, dtype=np.int64)
            else:  # the end of the last frame may not be known yet: no size
                sizes = np.maximum(index.stops[run] - index.starts[run], 0)
            # cut the run where a batch would pass its limit (a frame larger than the
            # limit goes alone), a batch at a time: the same cuts as adding frames one by one
            cum = np.cumsum(sizes)
            k = 0
            while k < run.size:
                before = int(cum[k - 1]) if k else 0
                j = int(np.searchsorted(cum, before + limit - nbytes, side="right"))
                if j == k and not batch:
                    j = k + 1
                batch.extend(run[k:j].tolist())
                nbytes += int(cum[j - 1]) - before if j > k else 0
                k = j
                if k < run.size:  # the next frame does not fit
                    yield batch
                    batch, nbytes, made = [], 0, made + 1
                    limit = ramped_size(budget, ramp, made + 1)
            i += run.size
        if batch:
            yield batch

    @checked_by_first_read
    def prefetch(self, frames: Iterable[int]) -> None:
        """Fetch ``frames`` (0-based) into the cache in one concurrent round."""
        self._frames.prefetch(frames)

    def plan(self, frames: Iterable[int]) -> FetchPlan:
        """Dry run: the requests that reading ``frames`` (0-based) would cost now.

        No frame is fetched and the items of the Pixel Data are never walked (the
        header is read first if nothing has read it yet: the open's request). On an
        object without offset table, the frames a walk has not reached yet are the
        plan's ``unknown`` (not in its ``ranges``, ``requests`` and ``nbytes``): reading
        them walks the items up to them first. An offset table the open has not read
        yet is read (as the read would, counted in the ``index`` phase of
        :attr:`stats`): the rest of a Basic Offset Table longer than the first request
        (one request), or a dual DICOM-TIFF file's tile table (at most two).

        Parameters
        ----------
        frames : iterable of int
            The frames, 0-based.

        Returns
        -------
        FetchPlan
            ``frames`` (all of them, cached ones included), ``ranges`` (one request
            each, fetched in one round), ``requests``, ``nbytes`` and ``unknown``.
        """
        return self._frames.plan(frames)

    def frame_table(self) -> pandas.DataFrame:
        """Where every frame's data lies, one row a frame (pandas: ``hdfsspec[pandas]``).

        Columns: ``frame_number`` (1-based, as DICOM counts), ``offset`` and ``length``
        (the absolute byte range of the frame's data: its fragment's value, without the
        8-byte item header, or its native bytes; a frame of several fragments spans the
        item headers between them), and for a tiled image ``tile_row`` and
        ``tile_column`` (1-based, as highdicom counts; see
        :func:`hdfsspec.dicom.frame_table.frame_columns`). The same table whatever was
        read before. It costs the frame index (the offset tables, usually in the open's
        request), plus one request at the last frame with a Basic Offset Table (where
        it ends); without offset table, a walk of every item of the Pixel Data (as many
        bytes, ``scan_window`` a request), after which the index is persisted.
        """
        try:
            import pandas
        except ImportError as missing:
            raise ImportError(
                'DicomFile.frame_table needs pandas: pip install "hdfsspec[pandas]"'
            ) from missing
        index = self._frames.layout.resolve_last()  # the whole index, the last end found
        return pandas.DataFrame(frame_columns(index, self.header.dataset))

    # -- read-only ---------------------------------------------------------------------
    def write(self, data: Any) -> int:
        raise ReadOnlyError(f"the dicom filesystem is read-only: cannot write to {self.path!r}")


def _portable(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The plain values of an ``info()`` (what pins a version), for pickling."""
    if info is None:
        return None
    plain = (str, int, float, bool, datetime.datetime, type(None))
    return {k: v for k, v in info.items() if isinstance(v, plain)}

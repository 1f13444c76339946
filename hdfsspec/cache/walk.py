"""The walk of Pixel Data without offset table, as far as the reads ask: one object per file.

:class:`PartialScan` drives an :class:`~hdfsspec.cache.item_scan.ItemScanner` for the frame-aware
cache. It hands out the index of the frames found so far, keeps the rounds the walk
fetched (a contiguous run, bounded by the cache size) and puts the frames wholly
inside them in the cache's frame blocks, so that reading a frame the walk has passed
costs no request. It records the first bytes of every item it saw (the cache serves
highdicom's own item walk from them), the wall time of each walk, and a sample of the
link's bandwidth. When the walk ends it checks the frames it served against the final
grouping of the fragments.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque

import numpy as np

from hdfsspec._log import get_logger
from hdfsspec._types import FetchRanges, ReadOptions
from hdfsspec.cache.blocks import Block, FrameBlocks
from hdfsspec.cache.item_scan import ItemScanner
from hdfsspec.cache.progress import Progress, ScanProgress
from hdfsspec.dicom.fragment_items import slice_run
from hdfsspec.dicom.fragments import group_fragments
from hdfsspec.dicom.frame_locations import scanned_index
from hdfsspec.dicom.index import UNKNOWN, FrameIndex
from hdfsspec.dicom.parse import ParsedHeader, number_of_frames
from hdfsspec.errors import FrameIndexError
from hdfsspec.io.link import LinkModel
from hdfsspec.io.planning import block_ranges
from hdfsspec.io.redact import redact_url
from hdfsspec.io.stats import CacheStats

__all__ = ["PartialScan"]

_log = get_logger(__name__)

_PIXEL_TAG = 0x7FE00010
_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


_MIN_WINDOW = 256 * 1024
"""Smallest scan window a small cache bound shrinks the windows to."""


def walk_options(options: ReadOptions) -> tuple[ReadOptions, int]:
    """The options of a walk within the cache bound, and the most its run may hold.

    A walk holds its windows in flight and the one being walked (``scan_concurrency``
    + 1 windows) and a run of the rounds it fetched (frames are cut from it into the
    blocks as the walk completes them; while the grouping of the fragments is unsure,
    the run grows): each at most a quarter of the cache bound (``max_cache_bytes``)
    where windows of at least 256 KiB allow it. A small bound shrinks the windows,
    then their concurrency (to one). What the walk holds is reserved in the blocks
    (:meth:`~hdfsspec.cache.blocks.FrameBlocks.reserve`), so that blocks and walk together
    stay within the bound.
    """
    concurrency = options.scan_concurrency
    share = options.max_cache_bytes // 4
    window = min(options.scan_window, max(_MIN_WINDOW, share // (concurrency + 1)))
    concurrency = max(1, min(concurrency, share // window - 1))
    fitted = options.updated(scan_window=window, scan_concurrency=concurrency)
    return fitted, max(share, 2 * window)


class PartialScan:
    """A resumable scan of one object's fragment items, feeding the cache it belongs to.

    Parameters
    ----------
    parsed : ParsedHeader
        The object's header.
    fetch : callable
        Fetches a list of ranges for the walk (counted in the index phase).
    options : ReadOptions
        Scan window and concurrency; the cache bound bounds the rounds kept.
    blocks : FrameBlocks
        The cache's frame blocks: frames the walk passed are put there.
    heads : dict
        The cache's item heads (offset -> first bytes), filled as items are walked.
    stats : CacheStats
        The cache's counters (the wall time of each walk goes to the index phase).
    link : LinkModel
        The cost model, given one bandwidth sample per walk.
    progress : bool, fsspec Callback or None
        Progress of the walks (see :mod:`hdfsspec.cache.progress`).
    """

    def __init__(
        self,
        parsed: ParsedHeader,
        fetch: FetchRanges,
        options: ReadOptions,
        blocks: FrameBlocks,
        heads: dict[int, bytes],
        stats: CacheStats,
        link: LinkModel,
        progress: Progress = None,
    ) -> None:
        self.parsed = parsed
        self._blocks, self._heads, self._stats, self._link = blocks, heads, stats, link
        self._progress_option = progress
        self._progress: ScanProgress | None = None  # of the walk under way
        self._run: deque[tuple[int, bytes]] = deque()
        self.options, self._run_bound = walk_options(options)
        # the windows in flight and the one walked, until the walk ends; the run's bytes
        # are reserved as it grows and shrinks (_run_held)
        self._reserved = (self.options.scan_concurrency + 1) * self.options.scan_window
        blocks.reserve(self._reserved)
        self.scanner = ItemScanner(
            parsed, fetch, number_of_frames(parsed), self.options, self._scanned
        )
        self.partial: FrameIndex | None = None  # the frames found so far
        self._served = 0  # frames handed out before the walk ended, checked when it ends
        self._kept = 0  # frames the walk completed and put in the blocks while walking
        self._run_reserved = 0  # bytes of the run reserved in the blocks
        self._synced = 0  # item heads of the scanner already in ``heads``
        self._began: float | None = None  # when the first walk began (for the log)

    def view(
        self, frames: int | None = None, offset: int | None = None, ahead: int = 0
    ) -> tuple[FrameIndex, bool]:
        """Walk as far as asked (see :meth:`DicomFrameCache.view`); ``(index, complete)``."""
        whole = frames is None and offset is None
        if self.partial is not None and not whole and self.partial.covers(frames, offset):
            return self.partial, False
        parsed, scanner = self.parsed, self.scanner
        self._progress = ScanProgress(
            parsed.header_end, parsed.size, f"indexing {parsed.path}", self._progress_option
        )
        began, fetched = time.perf_counter(), scanner.fetched
        if self._began is None and frames != 0:  # a plan's view(frames=0) walks nothing
            self._began = began
            _log.info(
                "%s: no offset table: walking the items of the Pixel Data (%d bytes, %d frames)",
                redact_url(str(parsed.path)),
                parsed.size - parsed.header_end,
                number_of_frames(parsed),
            )
        try:
            if whole:
                scanner.advance()
            else:
                scanner.advance(frames, offset, ahead)
                scanner.walk_buffered()
        finally:
            self._progress.close()
            self._progress = None
            self._timed(scanner.fetched - fetched, time.perf_counter() - began)
        synced = self._synced
        self._heads.update(zip(scanner.offsets[synced:], scanner.heads[synced:], strict=True))
        self._synced = len(scanner.offsets)
        if scanner.done:
            return self._finish(), True
        count = scanner.complete
        self._served = max(self._served, count)
        self.partial = scanned_index(parsed, *scanner.frame_ranges(count))
        self._keep_frames(self.partial)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s: walked %d frame(s) so far", self._name, count)
        return self.partial, False

    @property
    def _name(self) -> str:
        return redact_url(str(self.parsed.path))

    def close(self) -> None:
        """Stop fetching ahead; what the walk held no longer counts against the bound."""
        self.scanner.close()
        self._run.clear()
        self._run_held()
        reserved, self._reserved = self._reserved, 0
        self._blocks.release(reserved)

    def _timed(self, nbytes: int, seconds: float) -> None:
        """Count a walk's wall time; a long one is a sample of the link's bandwidth."""
        self._stats.spent("index", seconds)
        if nbytes:  # windows pipelined: about one round trip, then the bytes at the link's pace
            self._link.observe([nbytes], seconds)

    def _scanned(self, base: int, data: bytes) -> None:
        """Keep the rounds the walk fetched (a contiguous run of at most two windows)."""
        if self._progress is not None:
            self._progress.update(base + len(data))
        run = self._run
        if run and base > run[-1][0] + len(run[-1][1]):
            run.clear()  # not contiguous: a new run
        elif run:  # the frames walked so far go to the blocks before the run moves on
            self._keep_walked()
        run.append((base, data))
        while len(run) > 1 and sum(len(d) for _, d in run) > self._run_bound:
            run.popleft()
        self._run_held()

    def _run_held(self) -> None:
        """Reserve in the blocks what the run holds now (release what it no longer does)."""
        held = sum(len(d) for _, d in self._run)
        if held > self._run_reserved:
            self._blocks.reserve(held - self._run_reserved)
        elif held < self._run_reserved:
            self._blocks.release(self._run_reserved - held)
        self._run_reserved = held

    def _keep_walked(self) -> None:
        """Put the frames the walk completed in the rounds held in the frame blocks (a
        walk of many rounds in one call would otherwise keep only its last ones)."""
        count = self.scanner.complete
        if count > self._kept:
            self._served = max(self._served, count)  # checked against the final grouping
            self._keep_frames(scanned_index(self.parsed, *self.scanner.frame_ranges(count)))
            self._kept = count

    def _finish(self) -> FrameIndex:
        """Group all the fragments; check the frames served meanwhile were grouped the same."""
        parsed, scanner = self.parsed, self.scanner
        result = scanner.result()
        starts, stops = group_fragments(result, number_of_frames(parsed), parsed)
        served = self._served
        if served:
            early_starts, early_stops = scanner.frame_ranges(served)
            if not (
                np.array_equal(starts[:served], early_starts)
                and np.array_equal(stops[:served], early_stops)
            ):
                raise FrameIndexError(
                    "the frames found while scanning differ from the final grouping of the "
                    "fragments; frames read before the scan ended may be wrong",
                    path=parsed.path,
                    offset=parsed.header_end,
                    tag=_PIXEL_TAG,
                )
        if result.delimited:
            self._heads[result.end - 8] = _DELIMITER
        index = scanned_index(parsed, starts, stops, delimited=result.delimited)
        _log.info(
            "%s: walked the items: %d frames located, %d requests, %d bytes in %.2f s",
            self._name,
            index.number_of_frames,
            scanner.requests,
            scanner.fetched,
            time.perf_counter() - (self._began or time.perf_counter()),
        )
        self._keep_frames(index)
        self.close()  # the walk is over: its run and share of the bound go
        return index

    def _keep_frames(self, index: FrameIndex) -> None:
        """Put the blocks of the frames wholly inside the run of rounds in the cache."""
        pieces = [(0, self.parsed.prefix), *self._run]
        if len(pieces) < 2:
            return
        held, run_end = len(pieces[0][1]), pieces[-1][0] + len(pieces[-1][1])
        first = max(0, int(np.searchsorted(index.starts, pieces[1][0], side="right")) - 1)
        last = int(np.searchsorted(index.starts, run_end, side="left"))  # start in the run
        frames = np.arange(first, last, dtype=np.int64)
        frames = frames[index.stops[frames] != UNKNOWN]
        starts, stops = block_ranges(index, frames)
        bases = np.array([b for b, _ in pieces], dtype=np.int64)
        ends = bases + np.array([len(d) for _, d in pieces], dtype=np.int64)
        k = np.searchsorted(bases, starts, side="right") - 1  # the piece holding the start
        keep = (stops > held) & (k >= 0) & (starts < ends[np.maximum(k, 0)])
        blocks: list[tuple[int, Block]] = []
        keep &= ~self._blocks.holding(frames)  # those held stay as they are
        chosen = (frames[keep], starts[keep], stops[keep], k[keep])
        for f, start, stop, piece in zip(*(a.tolist() for a in chosen), strict=True):
            base, data = pieces[piece]
            if stop <= base + len(data):
                blocks.append((f, (start, data[start - base : stop - base])))
            else:  # across the seam of two rounds
                joined = slice_run(pieces, start, stop)
                if joined is not None:
                    blocks.append((f, (start, joined)))
        self._blocks.put(blocks)
        if len(self._run) > 1:  # the last round may hold the start of the next frames
            last_round = self._run[-1]
            self._run.clear()
            self._run.append(last_round)
            self._run_held()
